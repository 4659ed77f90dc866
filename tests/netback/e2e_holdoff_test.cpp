// Notification hold-off, counted (xen-abi §4: RING_PUSH_RESPONSES_AND_CHECK_NOTIFY,
// RING_FINAL_CHECK_FOR_REQUESTS; §6.4 feature-rx-notify): netback's statistics/notify_tx and
// notify_rx count the event-channel sends to the frontend, netfront's Counters the kicks to the
// backend. No spinning on either side, so every wait is a sleep with the events armed: what the
// counts show is the rings' event indices at work, not a spinner that never needed an event.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "e2e_harness.hpp"

namespace hv::net::test {
namespace {

using netfront::Packet;

std::uint64_t hold_stat(Vif& v, const std::string& key) {
    const std::string s = v.backend_key("statistics/" + key);
    return s == "<absent>" ? 0 : std::stoull(s);
}

/// Neither side spins; the product's drain timeout.
struct Quiet {
    Env env{[] {
        BackendOptions o = Env::loop_options();
        o.spin = std::chrono::microseconds{0};
        return o;
    }()};
    Guest g{env, "g1"};
    Vif v{env, g, 0, [] {
        netfront::Options o;
        o.spin = std::chrono::microseconds{0};
        return o;
    }()};

    /// One frame there and back, received with the events armed again (rsp_event = next).
    void warm_up() {
        REQUIRE(v.nf->send(0, raw_frame(60, 999)));
        std::vector<Packet> got;
        REQUIRE(v.nf->receive(got, 1, 5s) == 1);
        settled(1);
    }
    /// Waits until netback's statistics show `n` frames both ways.
    void settled(std::uint64_t n) {
        REQUIRE(v.wait_backend_key("statistics/tx_packets", std::to_string(n)));
        REQUIRE(v.wait_backend_key("statistics/rx_packets", std::to_string(n)));
    }
    /// Receives `n` frames (sleeping on the channels between polls).
    std::vector<Packet> receive(std::size_t n) {
        std::vector<Packet> got;
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (got.size() < n && std::chrono::steady_clock::now() < deadline) {
            v.nf->receive(got, n - got.size(), 100ms);
        }
        return got;
    }
};

}  // namespace

TEST_CASE("a burst of frames: netfront pushes once and kicks at most once, netback notifies the "
          "frontend at most once per direction until it polls again",
          "[netback][e2e][holdoff][issue-5]") {
    Quiet q;
    Vif& v = q.v;
    q.warm_up();
    const netfront::Counters c0 = v.nf->counters();
    const std::uint64_t tx0 = hold_stat(v, "notify_tx");
    const std::uint64_t rx0 = hold_stat(v, "notify_rx");
    constexpr unsigned kFrames = 200;  // fits both rings (256 slots, 256 rx buffers posted)
    std::vector<std::vector<std::byte>> frames;
    for (unsigned i = 0; i < kFrames; ++i) {
        frames.push_back(raw_frame(60 + i, i));
    }
    const std::vector<std::span<const std::byte>> spans(frames.begin(), frames.end());
    auto k = v.nf->send_burst(0, spans);
    REQUIRE(k);
    REQUIRE(*k == kFrames);
    CHECK(v.nf->counters().tx_kicks - c0.tx_kicks <= 1);
    // The frontend does not poll: its rsp_event stays where the warm-up's poll put it, so
    // however many pushes netback makes, one crosses it per ring.
    q.settled(kFrames + 1);
    const std::uint64_t ntx = hold_stat(v, "notify_tx") - tx0;
    const std::uint64_t nrx = hold_stat(v, "notify_rx") - rx0;
    INFO(kFrames << " frames: netback notified " << ntx << " times for tx, " << nrx
                 << " for rx");
    CHECK(ntx <= 1);
    CHECK(nrx <= 1);
    const std::vector<Packet> got = q.receive(kFrames);
    REQUIRE(got.size() == kFrames);
    for (unsigned i = 0; i < kFrames; ++i) {
        REQUIRE(got[i].data == frames[i]);
    }
    // netback never ran short of rx buffers, so it never asked for the reposted ones.
    const netfront::Counters c1 = v.nf->counters();
    INFO("netfront kicked " << c1.tx_kicks - c0.tx_kicks << " times for tx, "
                            << c1.rx_kicks - c0.rx_kicks << " for rx buffers");
    CHECK(c1.rx_kicks - c0.rx_kicks == 0);
    CHECK(c1.tx_kicks - c0.tx_kicks <= 1);
}

TEST_CASE("frames netback answers one pass each: one notification per direction while the "
          "frontend does not poll, not one per response",
          "[netback][e2e][holdoff][issue-5]") {
    // Each frame is sent alone and netback has answered it (its own push) before the next: a
    // backend ignoring rsp_event notifies kFrames times here.
    Quiet q;
    Vif& v = q.v;
    q.warm_up();
    const std::uint64_t tx0 = hold_stat(v, "notify_tx");
    const std::uint64_t rx0 = hold_stat(v, "notify_rx");
    constexpr unsigned kFrames = 24;
    for (unsigned i = 0; i < kFrames; ++i) {
        REQUIRE(v.nf->send(0, raw_frame(60, i)));
        q.settled(2 + i);
    }
    const std::uint64_t ntx = hold_stat(v, "notify_tx") - tx0;
    const std::uint64_t nrx = hold_stat(v, "notify_rx") - rx0;
    INFO(kFrames << " frames one by one: netback notified " << ntx << " times for tx, " << nrx
                 << " for rx");
    CHECK(ntx <= 1);
    CHECK(nrx <= 1);
    CHECK(q.receive(kFrames).size() == kFrames);
    // Polling re-armed the events: the next frame is notified again.
    REQUIRE(v.nf->send(0, raw_frame(60, 77)));
    q.settled(2 + kFrames);
    CHECK(v.wait_backend_key("statistics/notify_rx", std::to_string(rx0 + nrx + 1)));
}

TEST_CASE("with feature-rx-notify the frontend kicks for rx buffers only while netback waits for "
          "them, and netback's held frames then go out",
          "[netback][e2e][holdoff][issue-5]") {
    Quiet q;
    Vif& v = q.v;
    q.warm_up();
    const netfront::Counters c0 = v.nf->counters();
    constexpr unsigned kFrames = 300;  // 256 rx buffers posted: 44 frames wait for more
    v.nf->raw_rx_hold(true);           // responses are read, no buffer is posted again
    std::vector<Packet> got;
    REQUIRE(send_until_rx_buffers_used(v, kFrames, got) == kFrames);
    REQUIRE(got.size() == 256);
    CHECK(v.nf->counters().rx_kicks == c0.rx_kicks);  // nothing posted yet
    v.nf->raw_rx_hold(false);  // the buffers go back (a kick if netback sleeps waiting)
    for (const Packet& p : q.receive(kFrames - got.size())) {
        got.push_back(p);
    }
    REQUIRE(got.size() == kFrames);
    for (unsigned i = 0; i < kFrames; ++i) {
        REQUIRE(got[i].data == raw_frame(60 + i, i));
    }
    // netback asks (req_event) only when it sleeps waiting for buffers: one kick then, or none
    // when it was still awake and found them itself; never one per buffer (hundreds).
    const std::uint64_t kicks = v.nf->counters().rx_kicks - c0.rx_kicks;
    INFO("rx kicks " << kicks);
    CHECK(kicks <= 4);
    CHECK(hold_stat(v, "rx_dropped") == 0);
}

}  // namespace hv::net::test
