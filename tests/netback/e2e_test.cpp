// netback end to end (in-process hv-min + XenStore, the real Backend with loop engines, frontend
// domains driving libnetfront): handshake and keys, data (single and multi-slot, GSO 64 KiB as
// one netif packet, csum flags, rx extras), split/shared event channels, multi-queue, rate,
// statistics, reconnect and teardown.
#include <poll.h>

#include <catch2/catch.hpp>

#include <thread>

#include <algorithm>
#include <cstring>

#include "e2e_harness.hpp"
#include "hv/rings/netif_l4.hpp"

namespace hv::net::test {
namespace {

using netfront::Offload;
using netfront::Packet;
namespace wire = hv::rings;

/// Sends `frame` on queue `q` and waits for it to come back through the loop engine.
Packet echo(Vif& v, const std::vector<std::byte>& frame, const Offload& off = {}, unsigned q = 0) {
    REQUIRE(v.nf->send(q, frame, off));
    std::vector<Packet> got;
    REQUIRE(v.nf->receive(got, 1, 5s) == 1);
    return std::move(got[0]);
}

/// Keeps a copy of each packet netfront lends to poll_each() (all on queue 0 here).
struct Collect {
    std::vector<std::vector<std::byte>>& got;
    void operator()(const netfront::PacketView& p) const {
        CHECK(p.queue == 0);
        got.emplace_back(p.data.begin(), p.data.end());
    }
};

/// The frontend's event-channel fds, to poll for POLLIN.
std::vector<pollfd> channel_pollfds(Vif& v) {
    std::vector<pollfd> fds;
    for (int fd : v.nf->pollable_fds()) {
        fds.push_back({fd, POLLIN, 0});
    }
    return fds;
}

}  // namespace

TEST_CASE("netback publishes its features and reaches Connected only with hotplug-status",
          "[netback][e2e][state]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, {}, {}, /*connect=*/false);
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    // The host side is made at probe, before any frontend: hotplug-status comes with InitWait
    // (a loop engine has nothing to plug in).
    REQUIRE(v.wait_backend_key("hotplug-status", "connected"));
    CHECK(v.backend_key("feature-sg") == "1");
    CHECK(v.backend_key("feature-gso-tcpv4") == "1");
    CHECK(v.backend_key("feature-gso-tcpv6") == "1");
    CHECK(v.backend_key("feature-rx-copy") == "1");
    CHECK(v.backend_key("feature-rx-flip") == "0");
    CHECK(v.backend_key("feature-split-event-channels") == "1");
    CHECK(v.backend_key("feature-ipv6-csum-offload") == "1");
    CHECK(v.backend_key("multi-queue-max-queues") == "4");
    CHECK(v.backend_key("hotplug-error") == "<absent>");
    // netfront writes its keys and goes straight to Connected; the backend follows.
    v.connect();
    CHECK(v.backend_key("hotplug-status") == "connected");
    CHECK(v.nf->phase() == netfront::Phase::connected);
    CHECK(v.nf->split());
    CHECK(v.nf->mac().starts_with("00:16:3e"));
}

TEST_CASE("with the frontend Connected first, the backend's Connected waits for a late "
          "hotplug-status",
          "[netback][e2e][state]") {
    // Linux netback connects the rings on the frontend's Connected but defers its own state
    // until hotplug-status reads "connected" (a toolstack's script may write it late).
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0, {}, {}, /*connect=*/false);
    REQUIRE(v.wait_backend_key("hotplug-status", "connected"));
    REQUIRE(env.xs->rm(v.bdir() + "/hotplug-status"));
    v.start_frontend();
    const auto fs = xenbus::read_state(*env.xs, v.fdir());
    REQUIRE(fs);
    REQUIRE(*fs == XenbusState::XenbusStateConnected);
    SECTION("an error stays InitWait") {
        REQUIRE(env.xs->write(v.bdir() + "/hotplug-status", "error"));
        CHECK_FALSE(v.wait_backend(XenbusState::XenbusStateConnected, 1s));
        CHECK(v.backend_key("state") == "2");
    }
    SECTION("connected, late") {
        CHECK_FALSE(v.wait_backend(XenbusState::XenbusStateConnected, 1s));
        CHECK(v.backend_key("state") == "2");
        REQUIRE(env.xs->write(v.bdir() + "/hotplug-status", "connected"));
        REQUIRE(v.wait_backend(XenbusState::XenbusStateConnected));
        REQUIRE(v.nf->wait_connected(10s));
        CHECK(echo(v, raw_frame(64, 1)).data == raw_frame(64, 1));
    }
}

TEST_CASE("a frame sent by netfront comes back through the loop engine byte for byte",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    for (std::size_t len : {14U, 60U, 1514U, 4096U}) {
        const auto f = raw_frame(len, static_cast<std::uint32_t>(len));
        const Packet p = echo(v, f);
        CHECK(p.data == f);
        CHECK_FALSE(p.offload.csum_blank);
        CHECK(p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_NONE);
    }
    CHECK(v.nf->counters().tx_packets == 4);
    CHECK(v.nf->counters().rx_packets == 4);
}

TEST_CASE("multi-slot packets cross as one packet in both directions", "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    for (std::size_t len : {4097U, 9000U, 20000U, 65535U}) {
        const auto f = raw_frame(len, 7);
        const Packet p = echo(v, f);
        CHECK(p.data.size() == len);
        CHECK(p.data == f);
    }
}

TEST_CASE("a 64 KiB GSO frame crosses as one netif packet with its GSO extra and csum flags",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    SECTION("TCPv4") {
        const auto f = tcp4_frame(65535, 3);
        Offload off{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448};
        const Packet p = echo(v, f, off);
        CHECK(p.data == f);
        CHECK(p.offload.csum_blank);
        CHECK(p.offload.data_validated);
        CHECK(p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4);
        CHECK(p.offload.gso_size == 1448);
        CHECK(p.offload.csum_start == 14 + 20);  // netfront found the TCP header
        CHECK(p.offload.csum_offset == 16);
    }
    SECTION("TCPv6") {
        const auto f = tcp6_frame(60000, 4);
        Offload off{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV6, 1428};
        const Packet p = echo(v, f, off);
        CHECK(p.data == f);
        CHECK(p.offload.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV6);
        CHECK(p.offload.gso_size == 1428);
        CHECK(p.offload.csum_start == 14 + 40);
        CHECK(p.offload.csum_offset == 16);
    }
}

TEST_CASE("a csum_blank frame comes back csum_blank and data_validated, a validated one validated",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    const auto f = tcp4_frame(1000, 9);
    Packet p = echo(v, f, Offload{true, false, 0, 0});
    CHECK(p.offload.csum_blank);
    CHECK(p.offload.data_validated);
    CHECK(p.offload.csum_start == 14 + 20);
    CHECK(p.offload.csum_offset == 16);
    p = echo(v, f, Offload{false, true, 0, 0});
    CHECK_FALSE(p.offload.csum_blank);
    CHECK(p.offload.data_validated);
    p = echo(v, f);
    CHECK_FALSE(p.offload.csum_blank);
    CHECK_FALSE(p.offload.data_validated);
}

TEST_CASE("netfront rx: a partial checksum needs TCP/UDP headers of the GSO type's IP version",
          "[netback][e2e][hostile]") {
    // The rx error branch of netfront (a backend's csum_blank/GSO packet it cannot place).
    Packet p;
    p.offload.csum_blank = true;
    SECTION("not IP: rejected") {
        p.data = raw_frame(100, 1);
        CHECK_FALSE(netfront::locate_csum(p));
    }
    SECTION("truncated IPv4 header: rejected") {
        p.data = tcp4_frame(1000, 2);
        p.data.resize(14 + 30);
        CHECK_FALSE(netfront::locate_csum(p));
    }
    SECTION("GSO TCPv6 on an IPv4 packet: rejected") {
        p.data = tcp4_frame(1000, 3);
        p.offload.gso_type = wire::XEN_NETIF_GSO_TYPE_TCPV6;
        p.offload.gso_size = 1400;
        CHECK_FALSE(netfront::locate_csum(p));
    }
    SECTION("TCPv6 with GSO TCPv6: placed after the IPv6 header") {
        p.data = tcp6_frame(3000, 4);
        p.offload.gso_type = wire::XEN_NETIF_GSO_TYPE_TCPV6;
        p.offload.gso_size = 1400;
        REQUIRE(netfront::locate_csum(p));
        CHECK(p.offload.csum_start == 14 + 40);
        CHECK(p.offload.csum_offset == 16);
    }
}

TEST_CASE("a GSO frame for a frontend without that GSO feature is dropped on rx and counted",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    netfront::Options o;
    o.gso_tcpv4 = false;
    Vif v(env, g, 0, o);
    REQUIRE(v.nf->send(0, tcp4_frame(20000, 1), Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448}));
    REQUIRE(v.nf->send(0, raw_frame(100, 1)));
    std::vector<Packet> got;
    REQUIRE(v.nf->receive(got, 1, 5s) == 1);
    CHECK(got[0].data.size() == 100);
    CHECK(v.wait_backend_key("statistics/rx_dropped", "1"));
}

TEST_CASE("netfront sends only the offloads the backend offered: no TSO without "
          "feature-gso-tcpv4/-v6, IPv6 checksums completed without feature-ipv6-csum-offload",
          "[netback][e2e][offload]") {
    BackendOptions bo = Env::loop_options();
    bo.tx_offers.gso_tcpv4 = bo.tx_offers.gso_tcpv6 = false;
    bo.tx_offers.csum6 = false;
    Env env(bo);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(v.backend_key("feature-gso-tcpv4") == "0");
    CHECK(v.backend_key("feature-gso-tcpv6") == "0");
    CHECK(v.backend_key("feature-ipv6-csum-offload") == "0");
    CHECK(v.backend_key("feature-no-csum-offload") == "0");
    const netfront::TxOffloads t = v.nf->tx_offloads();
    CHECK(t.sg);
    CHECK(t.csum4);
    CHECK_FALSE(t.csum6);
    CHECK_FALSE(t.gso_tcpv4);
    CHECK_FALSE(t.gso_tcpv6);
    // A GSO frame never reaches the ring: netfront refuses it.
    CHECK(v.nf->send(0, tcp4_frame(20000, 1), Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV4, 1448})
              .error() == netfront::make_error_code(netfront::Errc::bad_packet));
    CHECK(v.nf->send(0, tcp6_frame(20000, 1), Offload{true, true, wire::XEN_NETIF_GSO_TYPE_TCPV6, 1428})
              .error() == netfront::make_error_code(netfront::Errc::bad_packet));
    // csum_blank on a frame without a TCP/UDP header cannot be completed: refused too.
    CHECK(v.nf->send(0, raw_frame(100, 1), Offload{true, false, 0, 0}).error() ==
          netfront::make_error_code(netfront::Errc::bad_packet));
    // IPv6 partial checksum, 3 pages: completed by netfront, sent validated, not csum_blank.
    const auto f6 = tcp6_frame(9000, 5);
    Packet p = echo(v, f6, Offload{true, false, 0, 0});
    CHECK_FALSE(p.offload.csum_blank);
    CHECK(p.offload.data_validated);
    // The field held the pseudo-header sum (here: whatever the sender left); completed means
    // the segment as sent sums, with that value, to all ones.
    CHECK(tcp6_checksum_completed(p.data, f6));
    // IPv4 partial checksums are still offloaded.
    p = echo(v, tcp4_frame(1000, 9), Offload{true, false, 0, 0});
    CHECK(p.offload.csum_blank);
    CHECK(v.nf->counters().tx_errors == 0);
}

TEST_CASE("a backend offering no checksum offload: feature-no-csum-offload, no TSO, netfront "
          "completes every partial checksum", "[netback][e2e][offload]") {
    BackendOptions bo = Env::loop_options();
    bo.tx_offers.csum4 = bo.tx_offers.csum6 = false;
    Env env(bo);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(v.backend_key("feature-no-csum-offload") == "1");
    CHECK(v.backend_key("feature-gso-tcpv4") == "0");  // TSO is offered only with its csum
    CHECK(v.backend_key("feature-gso-tcpv6") == "0");
    const netfront::TxOffloads t = v.nf->tx_offloads();
    CHECK_FALSE(t.csum4);
    CHECK_FALSE(t.gso_tcpv4);
    const Packet p = echo(v, tcp4_frame(1000, 9), Offload{true, false, 0, 0});
    CHECK_FALSE(p.offload.csum_blank);
    CHECK(p.offload.data_validated);
    CHECK(v.nf->counters().tx_errors == 0);
}

TEST_CASE("a frontend asking for an offload the backend did not offer gets an error response",
          "[netback][e2e][offload][hostile]") {
    // A frontend ignoring the negotiation (netfront's own checks cannot be bypassed, so the
    // test writes the slots by hand): IPv6 csum_blank to a backend without IPv6 csum offload.
    BackendOptions bo = Env::loop_options();
    bo.tx_offers.csum6 = false;
    Env env(bo);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    Guest g2(env, "g2");
    Vif other(env, g2, 0);
    auto page = v.nf->raw_tx_page(0);
    REQUIRE(page);
    const auto f6 = tcp6_frame(200, 3);
    std::memcpy(page->data, f6.data(), f6.size());
    wire::netif_tx_request r{};
    r.gref = page->gref.get();
    r.id = page->id;
    r.size = static_cast<std::uint16_t>(f6.size());
    r.flags = wire::NETTXF_csum_blank | wire::NETTXF_data_validated;
    REQUIRE(v.nf->raw_tx(0, std::span(&r, 1)));
    CHECK(v.wait_backend_key("statistics/tx_errors", "1"));
    std::vector<Packet> none;
    v.nf->poll(none);
    const auto rsp = v.nf->take_tx_responses();
    REQUIRE(rsp.size() == 1);
    CHECK(rsp[0].status == wire::NETIF_RSP_ERROR);
    // The vif keeps serving, and so does the other guest's.
    CHECK(echo(v, raw_frame(60, 1)).data.size() == 60);
    CHECK(echo(other, raw_frame(60, 2)).data.size() == 60);
}

TEST_CASE("shared and split event channels both carry traffic", "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    netfront::Options shared;
    shared.split = false;
    Vif a(env, g, 0, shared);
    Vif b(env, g, 1);
    CHECK_FALSE(a.nf->split());
    CHECK(b.nf->split());
    for (int i = 0; i < 20; ++i) {
        const auto f = raw_frame(100 + static_cast<std::size_t>(i), static_cast<std::uint32_t>(i));
        CHECK(echo(a, f).data == f);
        CHECK(echo(b, f).data == f);
    }
}

TEST_CASE("a backend that does not offer split channels gets one event-channel",
          "[netback][e2e]") {
    auto opt = Env::loop_options();
    opt.split_event_channels = false;
    Env env(opt);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK_FALSE(v.nf->split());
    const auto f = raw_frame(300, 5);
    CHECK(echo(v, f).data == f);
}

TEST_CASE("multi-queue: every queue has its own rings and carries its own traffic",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    netfront::Options o;
    o.max_queues = 3;
    Vif v(env, g, 0, o);
    REQUIRE(v.nf->queues() == 3);
    auto nq = env.xs->read(v.fdir() + "/multi-queue-num-queues");
    REQUIRE(nq);
    CHECK(*nq == "3");
    CHECK(env.xs->read(v.fdir() + "/queue-2/tx-ring-ref"));
    for (unsigned q = 0; q < 3; ++q) {
        const auto f = raw_frame(500 + q, q);
        const Packet p = echo(v, f, {}, q);
        CHECK(p.queue == q);
        CHECK(p.data == f);
    }
}

TEST_CASE("many packets in flight all come back in order", "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::vector<Packet> got;
    const unsigned n = 5000;
    unsigned sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while ((sent < n || got.size() < n) && std::chrono::steady_clock::now() < deadline) {
        while (sent < n) {
            auto f = raw_frame(60 + sent % 3000, sent);
            if (!v.nf->send(0, f)) {
                break;  // busy: drain first
            }
            ++sent;
        }
        v.nf->receive(got, 1, 100ms);
    }
    REQUIRE(got.size() == n);
    for (unsigned i = 0; i < n; ++i) {
        REQUIRE(got[i].data == raw_frame(60 + i % 3000, i));
    }
    // The tx response log keeps only a bounded tail (hv-guest never reads it): the last 4096
    // of the 5000. Every one is OKAY.
    v.nf->receive(got, n, 200ms);  // any tx responses still unread
    const auto log = v.nf->take_tx_responses();
    CHECK(log.size() == 4096);
    CHECK(v.nf->take_tx_responses().empty());  // handed out once
    for (const auto& r : log) {
        CHECK(r.status == wire::NETIF_RSP_OKAY);
    }
}

TEST_CASE("a burst goes out with one push and the frames come back lent in place, in order",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::vector<std::vector<std::byte>> got;
    const Collect collect{got};
    // Waits (bounded) for `want` packets in all, lent to `collect`.
    auto wait_for = [&](std::size_t want) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
            if (v.nf->poll_each(collect) == 0) {
                std::vector<pollfd> fds;
                for (int fd : v.nf->pollable_fds()) {
                    fds.push_back({fd, POLLIN, 0});
                }
                (void)::poll(fds.data(), fds.size(), 20);
            }
        }
        return got.size();
    };
    // 300 one-slot frames: the ring's 256 slots take at least 256 (more once responses free
    // some); the rest follow in later bursts.
    std::vector<std::vector<std::byte>> frames;
    for (unsigned i = 0; i < 300; ++i) {
        frames.push_back(raw_frame(60 + i, i));
    }
    const std::vector<std::span<const std::byte>> spans(frames.begin(), frames.end());
    std::size_t sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (sent < spans.size() && std::chrono::steady_clock::now() < deadline) {
        auto k = v.nf->send_burst(0, std::span(spans).subspan(sent));
        REQUIRE(k);
        CHECK(*k <= spans.size() - sent);
        if (sent == 0) {
            CHECK(*k >= 256);
        }
        sent += *k;
        (void)v.nf->poll_each(collect);
    }
    REQUIRE(sent == spans.size());
    REQUIRE(wait_for(300) == 300);
    for (unsigned i = 0; i < 300; ++i) {
        REQUIRE(got[i] == frames[i]);
    }
    // A multi-slot packet is lent whole (joined in the device's scratch buffer).
    const auto big = raw_frame(9000, 9);
    REQUIRE(v.nf->send(0, big));
    REQUIRE(wait_for(301) == 301);
    CHECK(got[300] == big);
    // A frame netfront cannot carry ends the burst: it and what follows are not queued.
    const std::vector<std::byte> tiny(10, std::byte{0x11});  // shorter than an Ethernet header
    const std::vector<std::span<const std::byte>> mixed{frames[0], tiny, frames[1]};
    auto k = v.nf->send_burst(0, mixed);
    REQUIRE(k);
    CHECK(*k == 1);
    REQUIRE(wait_for(302) == 302);
    CHECK(got[301] == frames[0]);
    CHECK(v.nf->counters().rx_packets == 302);
    CHECK(v.nf->counters().rx_errors == 0);
}

TEST_CASE("a sink backend answers every frame once with OKAY, returns none, and counts them",
          "[netback][e2e][sink]") {
    enum class Path { copy, map, pool };
    const Path path = GENERATE(Path::copy, Path::map, Path::pool);
    INFO("path " << static_cast<int>(path));
    BackendOptions o = Env::loop_options();
    o.host = HostMode::sink;
    o.mode = path == Path::copy ? DataMode::copy : DataMode::map;
    o.persistent_pool = path == Path::pool;
    Env env(o);
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::vector<std::vector<std::byte>> frames;
    std::uint64_t bytes = 0;
    unsigned slots = 0;
    for (unsigned i = 0; i < 600; ++i) {
        const std::size_t len = i % 50 == 7 ? 9000 : 60 + i % 64;  // some multi-slot
        frames.push_back(raw_frame(len, i));
        bytes += len;
        slots += static_cast<unsigned>((len + 4095) / 4096);
    }
    const std::vector<std::span<const std::byte>> spans(frames.begin(), frames.end());
    std::size_t got = 0;
    std::vector<wire::netif_tx_response> rsps;
    auto drain = [&] {
        got += v.nf->poll_each([](const netfront::PacketView&) {});
        auto r = v.nf->take_tx_responses();
        rsps.insert(rsps.end(), r.begin(), r.end());
    };
    std::size_t sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((sent < spans.size() || v.nf->tx_outstanding() > 0) &&
           std::chrono::steady_clock::now() < deadline) {
        // The first burst fills the ring with one req_prod update: netback takes more than a
        // batch in one pass (kept mappings flush every 64 packets), later ones come by 32.
        const std::size_t burst = std::min<std::size_t>(sent == 0 ? 256 : 32, spans.size() - sent);
        auto k = v.nf->send_burst(0, std::span(spans).subspan(sent, burst));
        REQUIRE(k);
        sent += *k;
        drain();
        if (*k == 0) {
            std::this_thread::sleep_for(1ms);
        }
    }
    // A 64 KiB TSO frame is taken whole, its GSO extra answered NETIF_RSP_NULL.
    Offload gso;
    gso.csum_blank = true;
    gso.gso_type = wire::XEN_NETIF_GSO_TYPE_TCPV4;
    gso.gso_size = 1448;
    REQUIRE(v.nf->send(0, tcp4_frame(65535, 1), gso));
    bytes += 65535;
    while (v.nf->tx_outstanding() > 0 && std::chrono::steady_clock::now() < deadline) {
        drain();
        std::this_thread::sleep_for(1ms);
    }
    REQUIRE(sent == frames.size());
    REQUIRE(v.nf->tx_outstanding() == 0);
    drain();
    CHECK(got == 0);  // nothing comes back from a sink
    // One response per slot: each frame's slots, then the GSO frame's 16 data slots + 1 extra.
    REQUIRE(rsps.size() == slots + 17);
    std::size_t nulls = 0;
    for (const auto& r : rsps) {
        if (r.status == wire::NETIF_RSP_NULL) {
            ++nulls;
        } else {
            CHECK(r.status == wire::NETIF_RSP_OKAY);
        }
    }
    CHECK(nulls == 1);
    CHECK(v.nf->counters().tx_packets == slots + 16);
    CHECK(v.nf->counters().tx_errors == 0);
    CHECK(v.wait_backend_key("statistics/tx_packets", std::to_string(frames.size() + 1)));
    CHECK(v.wait_backend_key("statistics/tx_bytes", std::to_string(bytes)));
    CHECK(v.backend_key("statistics/tx_errors") == "0");
    CHECK(v.backend_key("statistics/tx_dropped") == "0");
    CHECK(v.backend_key("statistics/rx_packets") == "0");
    // What the sink refuses is visible too: a partial checksum on a frame without IP headers
    // gets an error response and counts as a tx error.
    Offload bad;
    bad.csum_blank = true;
    REQUIRE(v.nf->send(0, raw_frame(100, 3), bad));
    while (v.nf->tx_outstanding() > 0 && std::chrono::steady_clock::now() < deadline + 5s) {
        drain();
        std::this_thread::sleep_for(1ms);
    }
    CHECK(v.nf->counters().tx_errors == 1);
    CHECK(v.wait_backend_key("statistics/tx_errors", "1"));
}

TEST_CASE("unarmed polls receive every frame and arm() re-enables the wake-up before a sleep",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::vector<std::vector<std::byte>> got;
    const Collect collect{got};
    // Spinning without arming: the frames still arrive (the caller looks at the rings).
    for (std::uint32_t i = 0; i < 8; ++i) {
        REQUIRE(v.nf->send(0, raw_frame(60, i)));
    }
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (got.size() < 8 && std::chrono::steady_clock::now() < deadline) {
        if (v.nf->poll_each(collect, netfront::Device::Arm::no) == 0) {
            std::this_thread::sleep_for(1ms);
        }
    }
    REQUIRE(got.size() == 8);
    for (std::uint32_t i = 0; i < 8; ++i) {
        CHECK(got[i] == raw_frame(60, i));
    }
    // Armed (nothing pending), a frame sent now wakes a sleeper on the event channels.
    std::vector<pollfd> fds = channel_pollfds(v);
    bool armed = false;
    for (int i = 0; i < 100 && !armed; ++i) {
        armed = !v.nf->arm();  // true only while responses were still arriving
        if (!armed) {
            (void)v.nf->poll_each(collect, netfront::Device::Arm::no);
        }
    }
    REQUIRE(armed);
    REQUIRE(v.nf->send(0, raw_frame(60, 99)));
    REQUIRE(::poll(fds.data(), fds.size(), 5000) > 0);
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (got.size() < 9 && std::chrono::steady_clock::now() < until) {
        if (v.nf->poll_each(collect) == 0) {
            (void)::poll(fds.data(), fds.size(), 20);
        }
    }
    REQUIRE(got.size() == 9);
    CHECK(got[8] == raw_frame(60, 99));
}

TEST_CASE("ack_ready acks only the channels a poll found readable, Arm::unacked acks none",
          "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    std::vector<std::vector<std::byte>> got;
    const Collect collect{got};
    std::vector<pollfd> fds = channel_pollfds(v);
    auto readable = [&] {
        for (auto& p : fds) {
            p.revents = 0;
        }
        return ::poll(fds.data(), fds.size(), 0) > 0;
    };
    // Settle: everything acked and armed.
    REQUIRE(v.nf->poll_each(collect) == 0);
    REQUIRE_FALSE(readable());
    // A frame out and back: the backend notifies; passes with Arm::unacked take the tx response
    // and the echoed packet and re-arm, but consume no notification.
    REQUIRE(v.nf->send(0, raw_frame(60, 7)));
    REQUIRE(::poll(fds.data(), fds.size(), 5000) > 0);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (got.empty() && std::chrono::steady_clock::now() < deadline) {
        if (v.nf->poll_each(collect, netfront::Device::Arm::unacked) == 0) {
            std::this_thread::sleep_for(1ms);
        }
    }
    REQUIRE(got.size() == 1);
    CHECK(got[0] == raw_frame(60, 7));
    CHECK(readable());
    // A poll result that reports nothing readable acks nothing.
    std::vector<pollfd> none = fds;
    for (auto& p : none) {
        p.revents = 0;
    }
    v.nf->ack_ready(none);
    CHECK(readable());
    // Fds that are not this device's are ignored.
    v.nf->ack_ready(std::vector<pollfd>{{-1, POLLIN, POLLIN}});
    CHECK(readable());
    // The real result acks exactly what was pending: nothing readable afterwards.
    REQUIRE(readable());
    v.nf->ack_ready(fds);
    CHECK_FALSE(readable());
}

TEST_CASE("without feature-rx-notify netback polls for rx buffers: frames held for want of "
          "buffers go out once buffers are posted, with no kick",
          "[netback][e2e][issue-5]") {
    // xen-abi §6.4: without feature-rx-notify the frontend never kicks for new rx requests, so
    // the backend must poll (netback/README.md: every 5 ms while a frame is held). Linux netback
    // refuses such a frontend instead; we claim to serve it. No spinning on either side, and a
    // drain timeout far beyond the test, so only the poll can find the buffers: a backend that
    // waited for a kick would sit out its 500 ms sleep cap in every round.
    BackendOptions bo = Env::loop_options();
    bo.rx_drain_timeout = 30s;
    bo.spin = 0us;
    Env env(bo);
    Guest g(env, "g1");
    netfront::Options o;
    o.rx_notify = false;
    o.spin = 0us;
    Vif v(env, g, 0, o);
    CHECK(env.xs->read(v.fdir() + "/feature-rx-notify").value_or("") == "0");
    constexpr unsigned kFrames = 300;  // the ring posts 256 rx buffers: 44 frames are held
    constexpr int kRounds = 5;
    std::vector<Packet> got;
    auto waited = std::chrono::steady_clock::duration::zero();
    for (int round = 0; round < kRounds; ++round) {
        INFO("round " << round);
        got.clear();
        v.nf->raw_rx_hold(true);  // responses are read, but no buffer is posted again
        REQUIRE(send_until_rx_buffers_used(v, kFrames, got) == kFrames);
        REQUIRE(got.size() == 256);  // every posted buffer used; the rest wait in netback
        const auto t0 = std::chrono::steady_clock::now();
        v.nf->raw_rx_hold(false);  // receive() posts the buffers again, without notifying
        v.nf->receive(got, kFrames - got.size(), 10s);  // n counts this call's packets
        waited += std::chrono::steady_clock::now() - t0;
        REQUIRE(got.size() == kFrames);
        for (unsigned i = 0; i < kFrames; ++i) {
            REQUIRE(got[i].data == raw_frame(60 + i, i));
        }
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(waited).count();
    INFO("held frames delivered " << ms << " ms after the buffers were posted, over "
                                  << kRounds << " rounds");
    CHECK(ms < 1000);  // polling: ~5 ms a round; waiting for a kick: ~500 ms a round
    CHECK(v.wait_backend_key("statistics/rx_packets", std::to_string(kFrames * kRounds)));
    CHECK(v.backend_key("statistics/rx_dropped") == "0");
}

TEST_CASE("statistics are published under the backend dir", "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    for (int i = 0; i < 3; ++i) {
        (void)echo(v, raw_frame(1000, 1));
    }
    CHECK(v.wait_backend_key("statistics/tx_packets", "3"));
    CHECK(v.wait_backend_key("statistics/tx_bytes", "3000"));
    CHECK(v.wait_backend_key("statistics/rx_packets", "3"));
    CHECK(v.wait_backend_key("statistics/rx_bytes", "3000"));
    CHECK(v.backend_key("statistics/tx_errors") == "0");
}

TEST_CASE("the rate key limits tx throughput and is applied live", "[netback][e2e]") {
    Env env;
    Guest g(env, "g1");
    // 200 KiB per 100 ms = ~2 MB/s; the burst allows 200 KiB at once.
    Vif v(env, g, 0, {}, {{"rate", "204800,100000"}});
    const auto f = raw_frame(10000, 1);
    // 800 KB: the burst and three refills. The first window opened when the queue was created,
    // before this clock starts, so the first refill may come at once; the other two are 100 ms
    // apart each: ≥ 200 ms after it. (600 KB needed only two refills: ≥ 100-200 ms, and ASan
    // runs with a slow set-up measured 187-189 ms.)
    constexpr unsigned kFrames = 80;
    auto start = std::chrono::steady_clock::now();
    std::vector<Packet> got;
    unsigned sent = 0;
    while (got.size() < kFrames) {
        if (sent < kFrames && v.nf->send(0, f)) {
            ++sent;
            continue;
        }
        v.nf->receive(got, 1, 100ms);
        REQUIRE(std::chrono::steady_clock::now() - start < 10s);
    }
    const auto limited = std::chrono::steady_clock::now() - start;
    CHECK(limited >= 190ms);
    // Removing the key lifts the limit. The watch applies it with no signal back, and a loaded
    // machine only makes a run slower: the best of up to three runs must beat the limited one
    // (which cannot take under 190 ms while the limit holds).
    REQUIRE(env.xs->rm(v.bdir() + "/rate"));
    auto best = std::chrono::steady_clock::duration::max();
    for (int attempt = 0; attempt < 3 && best >= limited; ++attempt) {
        start = std::chrono::steady_clock::now();
        got.clear();
        sent = 0;
        while (got.size() < kFrames) {
            if (sent < kFrames && v.nf->send(0, f)) {
                ++sent;
                continue;
            }
            v.nf->receive(got, 1, 100ms);
            REQUIRE(std::chrono::steady_clock::now() - start < 10s);
        }
        best = std::min(best, std::chrono::steady_clock::now() - start);
    }
    CHECK(best < limited);
}

TEST_CASE("closing the backend tears the vif down and the frontend can reconnect",
          "[netback][e2e][state]") {
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(echo(v, raw_frame(64, 1)).data == raw_frame(64, 1));
    // The frontend closes and starts over (netfront reconnect): backend returns to InitWait.
    v.reconnect();
    CHECK(echo(v, raw_frame(64, 2)).data == raw_frame(64, 2));
    // Toolstack removal: online=0 + Closing, frontend closes, backend reaches Closed.
    REQUIRE(xenbus::request_close(*env.xs, DomId(0), "vif", g.domid, 0));
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosing));
    REQUIRE(v.nf->on_state_change());
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosed));
}

TEST_CASE("after the toolstack closes a vif, a frontend starting over does not bring it back",
          "[netback][e2e][state]") {
    // hvctl destroy's race: online=0 + Closing; netfront closes, and once the backend is Closed
    // it returns to Initialising (ready to reconnect). Any later event on the backend dir (our
    // own Closed write, a toolstack key) made netback re-create the vif and answer InitWait, so
    // the toolstack waited its full timeout for Closed.
    Env env;
    Guest g(env, "g1");
    Vif v(env, g, 0);
    CHECK(echo(v, raw_frame(64, 1)).data == raw_frame(64, 1));
    REQUIRE(xenbus::request_close(*env.xs, DomId(0), "vif", g.domid, 0));
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosing));
    REQUIRE(v.nf->on_state_change());  // frontend Closed
    REQUIRE(v.wait_backend(XenbusState::XenbusStateClosed));
    REQUIRE(v.nf->on_state_change());  // backend Closed: netfront goes back to Initialising
    const auto fs = xenbus::read_state(*env.xs, v.fdir());
    REQUIRE(fs);
    REQUIRE(*fs == XenbusState::XenbusStateInitialising);
    REQUIRE(env.xs->write(v.bdir() + "/hvtest-touch", "1"));  // an event on the backend dir
    CHECK_FALSE(v.wait_backend(XenbusState::XenbusStateInitWait, 1500ms));
    const auto bs = xenbus::read_state(*env.xs, v.bdir());
    REQUIRE(bs);
    CHECK(*bs == XenbusState::XenbusStateClosed);
    // The toolstack removes the directories; a vif added again under the same devid works.
    REQUIRE(xenbus::remove_device(*env.xs, DomId(0), "vif", g.domid, 0));
}

}  // namespace hv::net::test
