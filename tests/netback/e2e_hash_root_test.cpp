// Rx queue steering on a tap vif (root; netback/steer.hpp, xen-abi.md §6.7, Linux netback
// xenvif_select_queue): frames the kernel sends to a 4-queue vif's tap (injected with AF_PACKET
// on the tap inside the private namespace, so the kernel's transmit path picks the tap queue)
// reach netfront on the queue the frontend's mapping names for their flow's Toeplitz hash, with
// the HASH extra of that hash; a new mapping moves them, a mapping of all 1s sends all to queue
// 1, no table is hash % queues, frames with nothing to hash (cut IP headers, VLAN) take hash 0's
// queue, algorithm NONE detaches the program; a mapping changing while frames flow loses none.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "e2e_harness.hpp"
#include "e2e_tap.hpp"
#include "frames.hpp"
#include "netback/hash.hpp"
#include "netback/tap.hpp"
#include "skip.hpp"

namespace hv::net::test {
namespace {

namespace wire = hv::rings;
using hv::test::net::Bytes;
using hv::test::net::FlowSpec;
using hv::test::net::kRssKey;
using netfront::Packet;

void set_mapping(Vif& v, const std::vector<std::uint32_t>& m) {
    ctrl_ok(v, wire::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
            static_cast<std::uint32_t>(m.size()));
    if (!m.empty()) {
        REQUIRE(v.nf->set_hash_mapping(m, 0));
    }
}

/// An AF_PACKET socket bound to the tap `ifname` in the namespace: what it sends goes through
/// the kernel's transmit path to the tap (dev_queue_xmit: the tap's queue selection).
hv::UniqueFd injector(SwitchNs& sw, const std::string& ifname) {
    return sw.ns.run([&] {
        hv::UniqueFd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));  // sends only
        REQUIRE(s.get() >= 0);
        sockaddr_ll ll{};
        ll.sll_family = AF_PACKET;
        ll.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
        REQUIRE(ll.sll_ifindex > 0);
        REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&ll), sizeof ll) == 0);
        return s;
    });
}

void inject(const hv::UniqueFd& s, const Bytes& f) {
    REQUIRE(::send(s.get(), f.data(), f.size(), 0) == static_cast<ssize_t>(f.size()));
}

/// The flows: IPv4/IPv6 (some with two extension headers), TCP/UDP, distinct addresses and
/// ports. The last payload byte is
/// rewritten per round so each frame is recognised.
std::vector<FlowSpec> flows() {
    std::vector<FlowSpec> out;
    for (std::uint16_t i = 0; i < 24; ++i) {
        FlowSpec f;
        f.ipv6 = i % 2 == 1;
        f.proto = i % 4 < 2 ? 6 : 17;
        const std::string a =
            f.ipv6 ? "fd00::" + std::to_string(100 + i) : "10.7.0." + std::to_string(i + 1);
        const std::string b =
            f.ipv6 ? "fd00::9:" + std::to_string(i) : "10.9.1." + std::to_string(200 - i);
        REQUIRE(inet_pton(f.ipv6 ? AF_INET6 : AF_INET, a.c_str(), f.src.data()) == 1);
        REQUIRE(inet_pton(f.ipv6 ? AF_INET6 : AF_INET, b.c_str(), f.dst.data()) == 1);
        f.sport = static_cast<std::uint16_t>(30000 + 7 * i);
        f.dport = static_cast<std::uint16_t>(i % 3 == 0 ? 80 : 5000 + i);
        f.ext = f.ipv6 && i % 6 == 5 ? 2 : 0;  // some with IPv6 extension headers
        f.payload = 32;
        out.push_back(f);
    }
    return out;
}

Bytes tagged(const FlowSpec& f, std::uint8_t round, std::uint8_t idx) {
    Bytes b = hv::test::net::flow_frame(f);
    b[b.size() - 2] = round;
    b[b.size() - 1] = idx;
    return b;
}

std::uint32_t hash_of(const FlowSpec& f) {
    return toeplitz_hash(kRssKey, hv::test::net::flow_tuple(f));
}

bool same(const Packet& p, const Bytes& b) {
    return p.data.size() == b.size() && std::memcmp(p.data.data(), b.data(), b.size()) == 0;
}

/// Moves each packet of `in` that is a frame of `want` into `got` (at its index; each at most
/// once); others (IPv6 neighbour discovery the kernel sends on the tap) are left out.
void match(std::vector<Packet>& in, const std::vector<Bytes>& want,
           std::map<std::size_t, Packet>& got) {
    for (Packet& p : in) {
        for (std::size_t i = 0; i < want.size(); ++i) {
            if (same(p, want[i])) {
                CHECK(got.count(i) == 0);
                got[i] = std::move(p);
                break;
            }
        }
    }
    in.clear();
}

/// Receives until every frame of `want` came (≤ 10 s), adding to what `got` holds.
std::map<std::size_t, Packet> collect(Vif& v, const std::vector<Bytes>& want,
                                      std::map<std::size_t, Packet> got = {}) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    std::vector<Packet> in;
    while (got.size() < want.size() && std::chrono::steady_clock::now() < deadline) {
        v.nf->receive(in, 1, 100ms);
        match(in, want, got);
    }
    return got;
}

struct SteeredVif {
    SwitchNs sw = switch_ns();
    Env env{tap_options(sw.ns)};
    Guest g{env, "g1"};
    Vif v{env, g, 0, opts(), {{"bridge", "br0"}}};
    hv::UniqueFd inj = injector(sw, vif_name(g.domid, 0));
    static netfront::Options opts() {
        netfront::Options o;
        o.ctrl_ring = true;
        o.max_queues = 4;
        return o;
    }
};

}  // namespace

TEST_CASE(
    "a 4-queue tap vif: host frames reach the queue the frontend's mapping names for "
    "their flow, with its HASH extra, and a new mapping moves them",
    "[netback][e2e][hash][root]") {
    hv::test::require_root();
    SteeredVif t;
    Vif& v = t.v;
    REQUIRE(v.nf->queues() == 4);
    set_toeplitz(v, kRssKey, HashSettings::kAllTypes);
    const auto fl = flows();
    std::uint8_t round = 0;
    // Sends every flow once and checks queue and hash against `queue_of(hash)`.
    auto check_round = [&](const std::function<unsigned(std::uint32_t)>& queue_of) {
        ++round;
        std::vector<Bytes> sent;
        for (std::size_t i = 0; i < fl.size(); ++i) {
            sent.push_back(tagged(fl[i], round, static_cast<std::uint8_t>(i)));
            inject(t.inj, sent.back());
        }
        const auto got = collect(v, sent);
        REQUIRE(got.size() == sent.size());
        std::set<unsigned> queues;
        for (const auto& [i, p] : got) {
            INFO("round " << int{round} << " flow " << i);
            const std::uint32_t h = hash_of(fl[i]);
            REQUIRE(p.offload.has_hash);
            CHECK(p.offload.hash_value == h);
            CHECK(p.offload.hash_type == (fl[i].ipv6 ? 2 : 0) + (fl[i].proto == 6 ? 1 : 0));
            CHECK(p.queue == queue_of(h));
            queues.insert(p.queue);
        }
        return queues;
    };
    const std::vector<std::uint32_t> a{0, 1, 2, 3, 3, 2, 1, 0}, b{3, 2, 1, 0, 1, 0, 3, 2};
    set_mapping(v, a);
    CHECK(check_round([&](std::uint32_t h) { return a[h % a.size()]; }).size() >= 3);
    set_mapping(v, b);
    CHECK(check_round([&](std::uint32_t h) { return b[h % b.size()]; }).size() >= 3);
    set_mapping(v, std::vector<std::uint32_t>(128, 1));
    CHECK(check_round([](std::uint32_t) { return 1U; }) == std::set<unsigned>{1});
    set_mapping(v, {});  // no table: hash % queues
    CHECK(check_round([](std::uint32_t h) { return h % 4; }).size() >= 3);

    // Nothing to hash (IPv4/IPv6 cut inside the IP header, VLAN-tagged): hash 0's queue,
    // mapping[0] = 3, and no extra.
    set_mapping(v, b);
    Bytes v4cut = tagged(fl[0], 99, 0), v6cut = tagged(fl[1], 99, 1), vlan;
    v4cut.resize(14 + 12);
    v6cut.resize(14 + 30);
    FlowSpec tf = fl[2];
    tf.vlan = true;
    vlan = tagged(tf, 99, 2);
    const std::vector<Bytes> odd{v4cut, v6cut, vlan};
    for (const Bytes& f : odd) {
        inject(t.inj, f);
    }
    auto got = collect(v, odd);
    REQUIRE(got.size() == odd.size());
    for (const auto& [i, p] : got) {
        INFO("frame " << i);
        CHECK(p.queue == b[0]);
        CHECK_FALSE(p.offload.has_hash);
    }

    // Algorithm NONE: the program is detached; frames still arrive, without extras.
    ctrl_ok(v, wire::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
            wire::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
    std::vector<Bytes> sent;
    for (std::size_t i = 0; i < fl.size(); ++i) {
        sent.push_back(tagged(fl[i], 100, static_cast<std::uint8_t>(i)));
        inject(t.inj, sent.back());
    }
    got = collect(v, sent);
    REQUIRE(got.size() == sent.size());
    for (const auto& [i, p] : got) {
        CHECK_FALSE(p.offload.has_hash);
    }
}

TEST_CASE(
    "a mapping changed while host frames flow to a tap vif loses none of them and each "
    "keeps its flow's hash",
    "[netback][e2e][hash][root][hostile]") {
    hv::test::require_root();
    SteeredVif t;
    Vif& v = t.v;
    set_toeplitz(v, kRssKey, HashSettings::kAllTypes);
    const auto fl = flows();
    std::mt19937 rng(14);
    std::vector<Bytes> sent;
    std::vector<std::size_t> flow_of;
    std::map<std::size_t, Packet> got;
    std::vector<Packet> in;
    // 50 bursts of 24 frames; after each burst a new mapping of a new size, and what came so far
    // is taken (frames of the burst are still in the tap queues or netback).
    for (std::uint8_t burst = 0; burst < 50; ++burst) {
        for (std::size_t i = 0; i < fl.size(); ++i) {
            Bytes f = tagged(fl[i], burst, static_cast<std::uint8_t>(i));
            inject(t.inj, f);
            sent.push_back(std::move(f));
            flow_of.push_back(i);
        }
        std::vector<std::uint32_t> m(1 + rng() % 128);
        for (auto& e : m) {
            e = rng() % 4;
        }
        set_mapping(v, m);
        v.nf->receive(in, 1, 1ms);
        match(in, sent, got);
    }
    got = collect(v, sent, std::move(got));  // the rest
    CHECK(got.size() == sent.size());
    for (const auto& [k, p] : got) {
        CHECK(p.offload.has_hash);
        CHECK(p.offload.hash_value == hash_of(fl[flow_of[k]]));
        CHECK(p.queue < 4);
    }
    CHECK(v.backend_key("state") == "4");
}

}  // namespace hv::net::test
