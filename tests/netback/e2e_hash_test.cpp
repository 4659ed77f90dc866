// The control ring's hash taking effect on rx (xen-abi.md §6.3, §6.7; netback/hash.hpp; Linux
// netback hash.c, rx.c): once the frontend set Toeplitz, a key and the types, frames of an
// enabled type come back with a HASH extra (after the GSO one) whose value is the Toeplitz hash
// of the flow's tuple, on the copy, map and persistent-pool (direct read) paths; algorithm NONE
// or a type not enabled: no extra. The loop engine brings each frame back on the queue it was
// sent on, after the settings its send followed (a SUCCESS answer means they are in effect).
#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "e2e_harness.hpp"
#include "frames.hpp"
#include "netback/hash.hpp"

namespace hv::net::test {
namespace {

namespace wire = hv::rings;
using hv::test::net::FlowSpec;
using hv::test::net::kRssKey;
using netfront::Packet;

constexpr std::uint32_t kAll = HashSettings::kAllTypes;

enum class Path { copy, map, pool };

BackendOptions options(Path p) {
    BackendOptions o = Env::loop_options();
    o.mode = p == Path::copy ? DataMode::copy : DataMode::map;
    o.persistent_pool = p == Path::pool;
    return o;
}

netfront::Options ctrl_opts() {
    netfront::Options o;
    o.ctrl_ring = true;
    o.max_queues = 2;
    return o;
}

/// Toeplitz with the RSS suite's key and `flags`.
void configure(Vif& v, std::uint32_t flags) {
    set_toeplitz(v, kRssKey, flags);
}

std::vector<std::byte> bytes(const std::vector<std::uint8_t>& b) {
    std::vector<std::byte> o(b.size());
    std::memcpy(o.data(), b.data(), b.size());
    return o;
}

/// The 4-tuple of tcp4_frame / tcp6_frame, read at fixed offsets (no extension headers).
std::vector<std::uint8_t> tcp_tuple(const std::vector<std::byte>& f, bool v6) {
    const std::size_t at = v6 ? 22 : 26, n = v6 ? 36 : 12;
    std::vector<std::uint8_t> t(n);
    std::memcpy(t.data(), f.data() + at, n);  // addresses then ports: contiguous in both
    return t;
}

/// Sends `f` on queue `q` and returns what came back.
Packet echo(Vif& v, const std::vector<std::byte>& f, unsigned q,
            const netfront::Offload& off = {}) {
    REQUIRE(v.nf->send(q, f, off));
    std::vector<Packet> got;
    REQUIRE(v.nf->receive(got, 1, 5s) == 1);
    REQUIRE(got[0].data == f);
    CHECK(got[0].queue == q);
    return got[0];
}

FlowSpec flow(bool v6, std::uint8_t proto, std::uint16_t sport, bool frag = false) {
    FlowSpec f;
    f.ipv6 = v6;
    f.proto = proto;
    f.fragment = frag;
    REQUIRE(inet_pton(v6 ? AF_INET6 : AF_INET, v6 ? "fd00::10" : "10.0.0.10", f.src.data()) == 1);
    REQUIRE(inet_pton(v6 ? AF_INET6 : AF_INET, v6 ? "fd00::2:20" : "10.0.2.20", f.dst.data()) == 1);
    f.sport = sport;
    f.dport = 443;
    f.payload = 100;
    return f;
}

/// Waits until the statistics count `n` rx packets; true when none was dropped.
bool all_delivered(Vif& v, std::uint64_t n) {
    REQUIRE(v.wait_backend_key("statistics/rx_packets", std::to_string(n)));
    const std::string d = v.backend_key("statistics/rx_dropped");
    return d == "<absent>" || d == "0";
}

}  // namespace

TEST_CASE(
    "rx frames carry a HASH extra with the Toeplitz hash of their tuple, after the GSO "
    "extra, on the copy, map and persistent-pool paths",
    "[netback][e2e][ctrl][hash]") {
    const Path path = GENERATE(Path::copy, Path::map, Path::pool);
    INFO("path " << static_cast<int>(path));
    Env env(options(path));
    Guest g(env, "g1");
    Vif v(env, g, 0, ctrl_opts());
    REQUIRE(v.nf->queues() == 2);
    // Before any setting: no extra.
    CHECK_FALSE(echo(v, bytes(flow_frame(flow(false, 6, 1000))), 0).offload.has_hash);
    configure(v, kAll);
    const netfront::Offload tso4{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448};
    const netfront::Offload tso6{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV6, 1428};
    for (std::uint32_t i = 0; i < 30; ++i) {
        const unsigned q = i % 2;
        struct Row {
            FlowSpec f;
            int type;
        };
        for (const Row& r : {Row{flow(false, 6, static_cast<std::uint16_t>(1000 + i)),
                                 wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP},
                             Row{flow(false, 17, 53), wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV4},
                             Row{flow(false, 6, 7, true), wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV4},
                             Row{flow(true, 6, static_cast<std::uint16_t>(2000 + i)),
                                 wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP},
                             Row{flow(true, 17, 53), wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV6}}) {
            const auto p = echo(v, bytes(flow_frame(r.f)), q);
            REQUIRE(p.offload.has_hash);
            CHECK(p.offload.hash_type == r.type);
            CHECK(p.offload.hash_algorithm == wire::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
            auto in = hv::test::net::flow_tuple(r.f);
            CHECK(p.offload.hash_value == toeplitz_hash(kRssKey, in));
        }
        // Not IP: no extra.
        CHECK_FALSE(echo(v, raw_frame(60, i), q).offload.has_hash);
        CHECK_FALSE(echo(v, raw_frame(30000, i), q).offload.has_hash);  // multi-page, no extra
        // GSO and HASH extras together.
        const auto t4 = tcp4_frame(65535, i);
        auto p = echo(v, t4, q, tso4);
        CHECK(p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4);
        CHECK(p.offload.gso_size == 1448);
        REQUIRE(p.offload.has_hash);
        CHECK(p.offload.hash_type == wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
        CHECK(p.offload.hash_value == toeplitz_hash(kRssKey, tcp_tuple(t4, false)));
        const auto t6 = tcp6_frame(30000, i);
        p = echo(v, t6, q, tso6);
        CHECK(p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV6);
        REQUIRE(p.offload.has_hash);
        CHECK(p.offload.hash_value == toeplitz_hash(kRssKey, tcp_tuple(t6, true)));
    }
    CHECK(all_delivered(v, 1 + 30 * 9));
    if (path == Path::pool) {
        // Some of them were read straight into the kept rx pages around both extras' slots.
        CHECK(std::stoull(v.backend_key("statistics/rx_direct")) > 0);
    }
}

TEST_CASE(
    "a type not enabled or algorithm NONE: no HASH extra, a GSO frame keeps its GSO "
    "extra alone",
    "[netback][e2e][ctrl][hash]") {
    const Path path = GENERATE(Path::copy, Path::pool);
    Env env(options(path));
    Guest g(env, "g1");
    Vif v(env, g, 0, ctrl_opts());
    configure(v, wire::XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    const netfront::Offload tso4{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448};
    for (std::uint32_t i = 0; i < 30; ++i) {
        CHECK_FALSE(echo(v, bytes(flow_frame(flow(false, 6, 1))), 0).offload.has_hash);
        // A GSO frame while hashing is on but not for its type: one extra where two had room.
        const auto t4 = tcp4_frame(65535, i);
        const auto p = echo(v, t4, 1, tso4);
        CHECK(p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4);
        CHECK_FALSE(p.offload.has_hash);
        CHECK(echo(v, bytes(flow_frame(flow(true, 6, 1))), 0).offload.hash_type ==
              wire::_XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    }
    ctrl_ok(v, wire::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
            wire::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
    CHECK_FALSE(echo(v, bytes(flow_frame(flow(true, 6, 1))), 0).offload.has_hash);
    // Switched back on, the flags the frontend set last apply again.
    ctrl_ok(v, wire::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
            wire::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
    CHECK(echo(v, bytes(flow_frame(flow(true, 6, 1))), 1).offload.has_hash);
    CHECK(all_delivered(v, 30 * 3 + 2));
}

TEST_CASE(
    "settings changed between frames apply to the next frame, nothing is lost, and a "
    "frontend without a control ring gets no extra",
    "[netback][e2e][ctrl][hash]") {
    Env env(options(Path::copy));
    Guest g(env, "g1");
    Vif v(env, g, 0, ctrl_opts());
    configure(v, kAll);
    std::array<std::uint8_t, 40> key{};
    for (std::uint32_t i = 0; i < 200; ++i) {
        // A new key (of a new length) every frame, mapping size changes too.
        const std::size_t len = 1 + i % 40;
        for (std::size_t k = 0; k < 40; ++k) {
            key[k] = k < len ? static_cast<std::uint8_t>(i * 31 + k) : 0;
        }
        REQUIRE(v.nf->set_hash_key(std::span(key).first(len)));
        ctrl_ok(v, wire::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, i % 5);
        const auto f = flow(i % 2 == 0, 6, static_cast<std::uint16_t>(i));
        const auto p = echo(v, bytes(flow_frame(f)), i % 2);
        REQUIRE(p.offload.has_hash);
        CHECK(p.offload.hash_value == toeplitz_hash(key, hv::test::net::flow_tuple(f)));
    }
    Vif plain(env, g, 1);
    CHECK_FALSE(echo(plain, bytes(flow_frame(flow(false, 6, 9))), 0).offload.has_hash);
    CHECK(all_delivered(v, 200));
}

}  // namespace hv::net::test
