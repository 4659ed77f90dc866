// Adaptive polling in hv-min's loop, the hypercall client's reply wait, event channel waits
// and the ring wait helper (hvmin/ring_wait.hpp): spinning finds work, a quiet window returns
// to sleeping, and no wake-up is lost with spinning on.
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "hv/mapping.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hvmin/ring_wait.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using hv::rings::BackRing;
using hv::rings::blkif_request;
using hv::rings::blkif_response;
using hv::rings::BlkifProtocol;
using hv::rings::DOMID_SELF;
using hv::rings::FrontRing;
using hv::rings::XEN_PAGE_SIZE;
using namespace std::chrono_literals;

namespace {

/// A loopback interdomain pair of dom0 (both ends in this process).
std::pair<EventChannelBinding, EventChannelBinding> loopback_pair(Services& dom0) {
    auto a = dom0.evtchn().alloc_unbound(DomId(0));
    REQUIRE(a);
    auto b = dom0.evtchn().bind_interdomain(DomId(DOMID_SELF), a->port());
    REQUIRE(b);
    CHECK(b->ack());  // the new binding starts pending
    return {std::move(*a), std::move(*b)};
}

/// cpus + 2 threads that never sleep, until destroyed; waits until cpus_oversubscribed() sees
/// them.
struct CpuHogs {
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    CpuHogs() {
        const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
        for (unsigned i = 0; i < cpus + 2; ++i) {
            threads.emplace_back([this] {
                while (!stop.load(std::memory_order_relaxed)) {
                    hv::cpu_relax();
                }
            });
        }
        for (int i = 0; i < 200 && !hv::cpus_oversubscribed(); ++i) {
            std::this_thread::sleep_for(2ms);
        }
    }
    ~CpuHogs() {
        stop = true;
        for (auto& t : threads) {
            t.join();
        }
    }
    CpuHogs(const CpuHogs&) = delete;
    CpuHogs& operator=(const CpuHogs&) = delete;
};

/// A stand-in for hv-min: answers one request on `server` after `delay` with an empty reply
/// of the same seq and op; with `stale_first`, sends the reply of the call before it (seq - 1,
/// rc 5) before the delay.
std::thread answer_once(UniqueFd& server, std::chrono::microseconds delay,
                        bool stale_first = false) {
    return std::thread([&server, delay, stale_first] {
        std::byte buf[512];
        const ssize_t n = ::recv(server.get(), buf, sizeof buf, 0);
        if (n < static_cast<ssize_t>(sizeof(wire::Header))) {
            return;
        }
        wire::Header h;
        std::memcpy(&h, buf, sizeof h);
        if (stale_first) {
            wire::ReplyHeader stale{wire::kMagic, h.op, 0, 0, h.seq - 1, 5, 0};
            (void)!::send(server.get(), &stale, sizeof stale, MSG_NOSIGNAL);
        }
        std::this_thread::sleep_for(delay);
        wire::ReplyHeader r{wire::kMagic, h.op, 0, 0, h.seq, 0, 0};
        (void)!::send(server.get(), &r, sizeof r, MSG_NOSIGNAL);
    });
}

}  // namespace

TEST_CASE(
    "hv-min's loop spins while hypercalls arrive within its window and sleeps after a quiet one",
    "[hvmin][spin]") {
    IgnoreLoad spin_even_when_loaded;
    CoreConfig cfg;
    cfg.spin_window = 20ms;  // generous: on a loaded machine the next call still comes within it
    Harness h(cfg);
    auto a = h.dom0().evtchn().alloc_unbound(DomId(0));
    REQUIRE(a);
    const auto before = h.core->loop_stats();
    constexpr int calls = 50;
    for (int i = 0; i < calls; ++i) {
        REQUIRE(h.dom0().evtchn().status(DomId(DOMID_SELF), a->port()));
        // A pause longer than the loop's pass over this connection (else the next call is
        // read in the same pass) and far shorter than the window.
        std::this_thread::sleep_for(300us);
    }
    const auto busy = h.core->loop_stats();
    // Each call after the first arrived while the loop was spinning (a preempted caller may
    // miss a few).
    CHECK(busy.spin_hits - before.spin_hits >= calls / 2);

    // Window expiry: the loop goes back to sleeping, once, and then burns no CPU.
    std::this_thread::sleep_for(100ms);
    const auto idle = h.core->loop_stats();
    CHECK(idle.sleeps > busy.sleeps);
    const auto cpu0 = process_cpu_time();
    std::this_thread::sleep_for(200ms);
    const auto cpu1 = process_cpu_time();
    const auto later = h.core->loop_stats();
    CHECK(later.sleeps == idle.sleeps);
    CHECK(later.spin_hits == idle.spin_hits);
    CHECK(cpu1 - cpu0 < 50ms);  // a spinning loop would have used ~200 ms
}

TEST_CASE("hv-min's loop and the hypercall client do not spin while CPUs are oversubscribed",
          "[hvmin][spin]") {
    // A spinner that holds a CPU another runnable thread needs only delays the thread it
    // waits for (on 2 loaded CPUs, copy_batch64 went from 20 to 5 GB/s with both spinning).
    CoreConfig cfg;
    cfg.spin_window = 20ms;  // as in the test above, where most calls are spin hits
    Harness h(cfg);
    h.dom0().channel().set_reply_spin(20ms);
    auto a = h.dom0().evtchn().alloc_unbound(DomId(0));
    REQUIRE(a);
    CpuHogs hogs;
    REQUIRE(hv::cpus_oversubscribed());
    const auto before = h.core->loop_stats();
    constexpr int calls = 40;
    for (int i = 0; i < calls; ++i) {
        REQUIRE(h.dom0().evtchn().status(DomId(DOMID_SELF), a->port()));
        std::this_thread::sleep_for(300us);
    }
    const auto after = h.core->loop_stats();
    // The load figure is sampled once a millisecond: allow a stray spin, not a spinning loop.
    CHECK(after.spin_hits - before.spin_hits < calls / 4);
    CHECK(after.sleeps - before.sleeps > calls * 3 / 4);
}

TEST_CASE("hv-min's loop with a zero window always sleeps", "[hvmin][spin]") {
    CoreConfig cfg;
    cfg.spin_window = 0us;
    Harness h(cfg);
    auto a = h.dom0().evtchn().alloc_unbound(DomId(0));
    REQUIRE(a);
    const auto before = h.core->loop_stats();
    for (int i = 0; i < 20; ++i) {
        REQUIRE(h.dom0().evtchn().status(DomId(DOMID_SELF), a->port()));
        std::this_thread::sleep_for(300us);  // as above: one wake-up per call
    }
    const auto after = h.core->loop_stats();
    CHECK(after.spin_hits == before.spin_hits);
    CHECK(after.sleeps - before.sleeps >= 20);  // one sleep per call
}

TEST_CASE(
    "the hypercall client gets its reply within or after its spin or without one, skips a "
    "late reply of an old call and still times out",
    "[hvmin][spin]") {
    IgnoreLoad spin_even_when_loaded;
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    Channel ch{UniqueFd(sv[0])};
    UniqueFd server(sv[1]);
    for (const auto spin : {0us, 50us, 100'000us}) {
        for (const auto delay : {0us, 5000us}) {
            INFO("spin " << spin.count() << " us, reply after " << delay.count() << " us");
            ch.set_reply_spin(spin);
            CHECK(ch.reply_spin() == spin);
            auto t = answer_once(server, delay);
            auto r = ch.call(wire::Op::evtchn_status, 0, {}, {}, 5000);
            t.join();
            REQUIRE(r);
            CHECK(r->hdr.rc == 0);
        }
    }
    // The late reply of an earlier call comes first: skipped, spinning or not.
    for (const auto spin : {0us, 100'000us}) {
        INFO("spin " << spin.count() << " us, a stale reply first");
        ch.set_reply_spin(spin);
        auto t = answer_once(server, 2ms, true);
        auto r = ch.call(wire::Op::evtchn_status, 0, {}, {}, 5000);
        t.join();
        REQUIRE(r);
        CHECK(r->hdr.rc == 0);
    }
    // No reply at all: the spin ends, the sleep ends at the timeout.
    ch.set_reply_spin(5ms);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = ch.call(wire::Op::evtchn_status, 0, {}, {}, 30);
    REQUIRE_FALSE(r);
    CHECK(r.error() == make_error_code(hvmin::Errc::timed_out));
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
}

TEST_CASE("an event channel wait with a spin budget sees events sent during and after it",
          "[hvmin][spin][evtchn]") {
    Harness h;
    auto [a, b] = loopback_pair(h.dom0());
    a.set_spin(2ms);
    CHECK(a.spin() == 2ms);
    for (const auto delay : {0us, 500us, 20'000us}) {
        INFO("sent after " << delay.count() << " us");
        std::atomic<bool> sent{false};  // Catch assertions only on this thread
        std::thread t([&b, &sent, delay] {
            std::this_thread::sleep_for(delay);
            sent = b.notify().has_value();
        });
        CHECK(a.wait(5000ms));
        t.join();
        CHECK(sent);
        CHECK(a.ack());
    }
    auto r = a.wait(10ms);  // nothing sent: spin, sleep, time out
    REQUIRE_FALSE(r);
    CHECK(r.error() == make_error_code(hvmin::Errc::timed_out));
}

namespace {

/// One thread per ring end, a real (loopback) event channel per direction, waits through the
/// ring wait helper with spin window `window`: every request and response arrives once, in
/// order; a lost wake-up shows as a timed-out wait.
void ring_conversation(std::chrono::microseconds window, std::uint64_t total) {
    Harness h;
    auto [to_back_rx, to_back_tx] = loopback_pair(h.dom0());    // front notifies back
    auto [to_front_rx, to_front_tx] = loopback_pair(h.dom0());  // back notifies front
    auto mem = Mapping::anonymous(2 * XEN_PAGE_SIZE);
    REQUIRE(mem);
    auto front = FrontRing<BlkifProtocol>::init(mem->bytes());
    REQUIRE(front);
    auto back = BackRing<BlkifProtocol>::attach(mem->bytes());
    REQUIRE(back);
    constexpr int watchdog_ms = 5000;

    std::atomic<int> back_failure{0};
    std::thread backend([&, &rx = to_back_rx, &tx = to_front_tx] {
        SpinPolicy spin(window);
        std::uint64_t expect = 0;
        while (expect < total) {
            if (!back->unconsumed()) {
                back_failure = 1;
                return;
            }
            while (auto req = back->take_request()) {
                if (req->id != expect) {
                    back_failure = 2;
                    return;
                }
                ++expect;
                blkif_response rsp{};
                rsp.id = req->id;
                back->put_response(rsp);
            }
            if (back->push_responses() && !tx.notify()) {
                back_failure = 3;
                return;
            }
            if (expect < total &&
                wait_on_channel(*back, rx, watchdog_ms, spin) == WaitOutcome::timed_out) {
                back_failure = 4;  // lost wake-up
                return;
            }
        }
    });

    SpinPolicy spin(window);
    std::uint64_t sent = 0;
    std::uint64_t answered = 0;
    bool lost = false;
    while (answered < total && !lost) {
        while (!front->full() && sent < total) {
            blkif_request req{};
            req.id = sent++;
            front->put_request(req);
        }
        if (front->push_requests()) {
            REQUIRE(to_back_tx.notify());
        }
        REQUIRE(front->unconsumed_responses());
        while (auto rsp = front->take_response()) {
            REQUIRE(rsp->id == answered);
            ++answered;
        }
        // Wait only when there is nothing more to send (ring full or all sent).
        if (answered < total && (front->full() || sent == total) &&
            wait_on_channel(*front, to_front_rx, watchdog_ms, spin) == WaitOutcome::timed_out) {
            lost = true;
        }
    }
    backend.join();
    CHECK_FALSE(lost);
    CHECK(back_failure == 0);
    CHECK(answered == total);
}

}  // namespace

TEST_CASE("the ring wait helper loses no wake-up whether it sleeps or spins",
          "[hvmin][spin][rings]") {
    SECTION("sleeping") {
        ring_conversation(0us, 100'000);
    }
    SECTION("spinning 20 us") {
        ring_conversation(20us, 100'000);
    }
    SECTION("spinning 1 ms") {
        ring_conversation(1ms, 100'000);
    }
}

TEST_CASE("the ring wait helper reports an impossible producer index as work instead of sleeping",
          "[hvmin][spin][rings][hostile]") {
    Harness h;
    auto [rx, tx] = loopback_pair(h.dom0());
    auto mem = Mapping::anonymous(XEN_PAGE_SIZE);
    REQUIRE(mem);
    auto front = FrontRing<BlkifProtocol>::init(mem->bytes());
    REQUIRE(front);
    auto back = BackRing<BlkifProtocol>::attach(mem->bytes());
    REQUIRE(back);
    front->shared().req_prod = 1000;  // a hostile front end: far more than a ring ahead
    for (const auto window : {0us, 1000us}) {
        SpinPolicy spin(window);
        spin.worked();
        CHECK(wait_on_channel(*back, rx, 5000, spin) == WaitOutcome::work);
        CHECK_FALSE(back->unconsumed());  // the caller's next drain sees the error
    }
    // A quiet ring: the final check arms req_event and the wait times out.
    front->shared().req_prod = 0;
    SpinPolicy spin(0us);
    CHECK(wait_on_channel(*back, rx, 10, spin) == WaitOutcome::timed_out);
    CHECK(front->shared().req_event == 1);
}
