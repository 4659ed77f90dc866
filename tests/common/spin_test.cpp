// hv::spin_until, spin_poll and SpinPolicy: spinning finds what is ready, gives up after its
// budget, and a policy stops spinning once work stops arriving.
#include "hv/spin.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <thread>
#include <vector>

#include "hv/unique_fd.hpp"

using namespace std::chrono_literals;

TEST_CASE("spin_until returns as soon as the condition holds and false after its budget",
          "[common][spin]") {
    int calls = 0;
    CHECK(hv::spin_until([&] { return ++calls == 5; }, 1s));
    CHECK(calls == 5);

    calls = 0;
    CHECK_FALSE(hv::spin_until(
        [&] {
            ++calls;
            return false;
        },
        0ns));
    CHECK(calls == 1);  // a zero budget probes exactly once

    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(hv::spin_until([] { return false; }, 2ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 2ms);
}

TEST_CASE("a yielding spin_until keeps its contract: true when ready, false after its budget",
          "[common][spin]") {
    // Past 64 probes, so the yields happen; the result and the budget are unchanged by them.
    int calls = 0;
    CHECK(hv::spin_until([&] { return ++calls == 1000; }, 10s, hv::SpinYield::every_64));
    CHECK(calls == 1000);

    calls = 0;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(hv::spin_until(
        [&] {
            ++calls;
            return false;
        },
        2ms, hv::SpinYield::every_64));
    CHECK(std::chrono::steady_clock::now() - t0 >= 2ms);
    CHECK(calls > 64);

    std::atomic<bool> flag{false};
    std::thread t([&] {
        std::this_thread::sleep_for(1ms);
        flag.store(true, std::memory_order_release);
    });
    CHECK(hv::spin_until([&] { return flag.load(std::memory_order_acquire); }, 10s,
                         hv::SpinYield::every_64));
    t.join();
}

TEST_CASE("spin_until sees a store made by another thread while it spins", "[common][spin]") {
    std::atomic<bool> flag{false};
    std::thread t([&] {
        std::this_thread::sleep_for(1ms);
        flag.store(true, std::memory_order_release);
    });
    CHECK(hv::spin_until([&] { return flag.load(std::memory_order_acquire); }, 10s));
    t.join();
}

TEST_CASE("spin_poll reports a readable fd during the spin or after it and times out",
          "[common][spin]") {
    hv::UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    REQUIRE(efd.valid());
    pollfd p{efd.get(), POLLIN, 0};

    // Nothing ready: the spin ends, then the (short) sleep times out.
    CHECK(hv::spin_poll(&p, 1, 5, 500us) == 0);
    CHECK(hv::spin_poll(&p, 1, 0, 0us) == 0);

    // Written while the caller spins.
    std::thread t([&] {
        std::this_thread::sleep_for(200us);
        const std::uint64_t one = 1;
        (void)!::write(efd.get(), &one, sizeof one);
    });
    CHECK(hv::spin_poll(&p, 1, 10'000, 100ms) == 1);
    CHECK((p.revents & POLLIN) != 0);
    t.join();

    // Ready before the call, no spin: a plain poll.
    p.revents = 0;
    CHECK(hv::spin_poll(&p, 1, -1, 0us) == 1);
}

TEST_CASE("SpinPolicy spins only within its window after work", "[common][spin]") {
    hv::SpinPolicy off;
    off.worked();
    CHECK_FALSE(off.enabled());
    CHECK(off.budget() == 0us);

    hv::SpinPolicy p(2ms);
    CHECK(p.budget() == 0us);  // no work seen yet: sleep at once
    p.worked();
    CHECK(p.budget() == 2ms);
    std::this_thread::sleep_for(3ms);
    CHECK(p.budget() == 0us);  // idle for a whole window
    p.worked();
    CHECK(p.budget() == 2ms);
}

TEST_CASE("cpus_oversubscribed() sees more runnable threads than CPUs",
          "[common][spin]") {
    const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    std::atomic<bool> stop{false};
    std::vector<std::thread> hogs;
    for (unsigned i = 0; i < cpus + 2; ++i) {
        hogs.emplace_back([&] {
            while (!stop.load(std::memory_order_relaxed)) {
                hv::cpu_relax();
            }
        });
    }
    // The load figure is sampled at most once a millisecond and must be high in most of the
    // last few samples: give it a few.
    bool over = false;
    for (int i = 0; i < 200 && !over; ++i) {
        std::this_thread::sleep_for(2ms);
        over = hv::cpus_oversubscribed();
    }
    CHECK(over);
    hv::set_spin_ignores_load(true);
    CHECK_FALSE(hv::cpus_oversubscribed());
    hv::set_spin_ignores_load(false);
    stop = true;
    for (auto& t : hogs) {
        t.join();
    }
}

TEST_CASE("LoadShare ignores a moment's extra runnable task beside a spinner on every CPU",
          "[common][spin]") {
    constexpr long cpus = 2;
    hv::LoadShare s;
    // Two spinners on two CPUs, and a third task runnable in one sample of every three
    // (a kernel worker, the bench's statistics), for a second of samples.
    for (int ms = 0; ms < 1000; ++ms) {
        s.sample(ms % 3 == 0 ? 3 : 2, cpus, 1ms);
        REQUIRE_FALSE(s.oversubscribed());
    }
    // From a quiet stretch, five milliseconds in a row of an extra task are still a blip...
    for (int ms = 0; ms < 100; ++ms) {
        s.sample(2, cpus, 1ms);
    }
    for (int ms = 0; ms < 5; ++ms) {
        s.sample(3, cpus, 1ms);
        CHECK_FALSE(s.oversubscribed());
    }
    // ...the sixth is not.
    s.sample(3, cpus, 1ms);
    CHECK(s.oversubscribed());
}

TEST_CASE("LoadShare sees a machine oversubscribed in most samples within 6 ms and lets go of it "
          "as fast",
          "[common][spin]") {
    constexpr long cpus = 2;
    hv::LoadShare s;
    for (int ms = 0; ms < 100; ++ms) {
        s.sample(1, cpus, 1ms);
    }
    REQUIRE_FALSE(s.oversubscribed());
    int took = 0;
    while (!s.oversubscribed() && took < 100) {
        s.sample(4, cpus, 1ms);  // cpus + 2 busy threads
        ++took;
    }
    CHECK(took == 6);
    // Stays so for as long as it lasts, and a moment's lull does not end it.
    for (int ms = 0; ms < 1000; ++ms) {
        s.sample(ms % 10 == 9 ? 1 : 20, cpus, 1ms);
        REQUIRE(s.oversubscribed());
    }
    // Over in two samples of three: still oversubscribed, whatever the phase.
    for (int ms = 0; ms < 300; ++ms) {
        s.sample(ms % 3 == 0 ? 2 : 3, cpus, 1ms);
        if (ms >= 6) {
            REQUIRE(s.oversubscribed());
        }
    }
    // After a stretch busy throughout, 6 quiet milliseconds end it.
    for (int ms = 0; ms < 100; ++ms) {
        s.sample(4, cpus, 1ms);
    }
    took = 0;
    while (s.oversubscribed() && took < 100) {
        s.sample(2, cpus, 1ms);
        ++took;
    }
    CHECK(took == 6);
}

TEST_CASE("LoadShare: a sample after a pause stands for 4 ms at most, unreadable counts as idle",
          "[common][spin]") {
    constexpr long cpus = 2;
    hv::LoadShare s;
    // One busy sample after a long pause does not decide alone; a second one does.
    s.sample(5, cpus, 10s);
    CHECK_FALSE(s.oversubscribed());
    s.sample(5, cpus, 50ms);
    CHECK(s.oversubscribed());
    // Nor does one idle sample after a pause end a lasting oversubscription.
    for (int ms = 0; ms < 20; ++ms) {
        s.sample(5, cpus, 1ms);
    }
    s.sample(1, cpus, 10s);
    CHECK(s.oversubscribed());
    s.sample(1, cpus, 10s);
    CHECK_FALSE(s.oversubscribed());

    // An unreadable count (-1) and an unknown CPU count (0 or -1) are samples that are not over.
    hv::LoadShare busy;
    for (int ms = 0; ms < 20; ++ms) {
        busy.sample(9, cpus, 1ms);
    }
    REQUIRE(busy.oversubscribed());
    for (int ms = 0; ms < 60; ++ms) {
        busy.sample(ms % 2 == 0 ? -1 : 9, ms % 2 == 0 ? cpus : (ms % 4 == 1 ? 0 : -1), 1ms);
    }
    CHECK_FALSE(busy.oversubscribed());
    CHECK(busy.over < hv::LoadShare::kAll / 100);
    // A zero interval (two samples within a millisecond) still counts as one step.
    hv::LoadShare z;
    z.sample(9, cpus, 0ms);
    CHECK(z.over > 0);
}

TEST_CASE("spin_epoll_wait finds an event during the spin or the sleep after it and times out",
          "[common][spin]") {
    hv::UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    hv::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
    REQUIRE(efd.valid());
    REQUIRE(ep.valid());
    epoll_event ev{};
    ev.events = EPOLLIN;
    REQUIRE(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, efd.get(), &ev) == 0);
    epoll_event out[4];

    CHECK(hv::spin_epoll_wait(ep.get(), out, 4, 5, 500us) == 0);  // spin, then a short sleep
    CHECK(hv::spin_epoll_wait(ep.get(), out, 4, 0, 200us) == 0);  // spin only

    std::thread t([&] {
        std::this_thread::sleep_for(200us);
        const std::uint64_t one = 1;
        (void)!::write(efd.get(), &one, sizeof one);
    });
    CHECK(hv::spin_epoll_wait(ep.get(), out, 4, 10'000, 100ms) == 1);  // found while spinning
    t.join();
    std::uint64_t v = 0;
    REQUIRE(::read(efd.get(), &v, sizeof v) == sizeof v);

    // Written after the spin ended: the sleep that follows sees it.
    std::thread late([&] {
        std::this_thread::sleep_for(20ms);
        const std::uint64_t one = 1;
        (void)!::write(efd.get(), &one, sizeof one);
    });
    CHECK(hv::spin_epoll_wait(ep.get(), out, 4, 10'000, 100us) == 1);
    late.join();
}

TEST_CASE("spin_then_sleep finds work by spinning or by the final check or is woken or times out",
          "[common][spin]") {
    hv::UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    REQUIRE(efd.valid());
    pollfd p{efd.get(), POLLIN, 0};
    std::atomic<bool> ring_moved{false};
    int ready_calls = 0;
    int checks = 0;
    auto ready = [&] {
        ++ready_calls;
        return ring_moved.load(std::memory_order_acquire);
    };
    auto final_check = [&] {
        ++checks;
        return ring_moved.load(std::memory_order_acquire);
    };

    SECTION("the producer moves the index while the consumer spins: no final check, no sleep") {
        hv::SpinPolicy policy(1s);
        policy.worked();
        std::thread t([&] {
            std::this_thread::sleep_for(1ms);
            ring_moved.store(true, std::memory_order_release);
        });
        CHECK(hv::spin_then_sleep(ready, final_check, &p, 1, 5000, policy) ==
              hv::WaitOutcome::work);
        t.join();
        CHECK(checks == 0);  // (ready_calls may be 1: this thread may lose the CPU for 1 ms)
    }
    SECTION("the final check finds what arrived after the spin") {
        hv::SpinPolicy policy(200us);
        policy.worked();
        auto late = [&] {
            ++checks;
            return true;  // the producer pushed between the last probe and the arm
        };
        CHECK(hv::spin_then_sleep(ready, late, &p, 1, 5000, policy) == hv::WaitOutcome::work);
        CHECK(checks == 1);
        CHECK(ready_calls > 1);
        CHECK(policy.budget() == 200us);  // work found: the next wait spins again
    }
    SECTION("a quiet window returns to sleeping: no spin, and the sleep is woken by the fd") {
        hv::SpinPolicy policy(2ms);
        policy.worked();
        std::this_thread::sleep_for(5ms);
        REQUIRE(policy.budget() == 0us);
        std::thread t([&] {
            std::this_thread::sleep_for(2ms);
            const std::uint64_t one = 1;
            (void)!::write(efd.get(), &one, sizeof one);
        });
        CHECK(hv::spin_then_sleep(ready, final_check, &p, 1, 5000, policy) == hv::WaitOutcome::fd);
        t.join();
        CHECK(ready_calls == 0);  // never spun
        CHECK(checks == 1);
        CHECK(policy.budget() == 2ms);  // the event counts as work: the next wait spins
    }
    SECTION("nothing arrives: the spin expires, the final check arms, the sleep times out") {
        hv::SpinPolicy policy(500us);
        policy.worked();
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(hv::spin_then_sleep(ready, final_check, &p, 1, 10, policy) ==
              hv::WaitOutcome::timed_out);
        CHECK(std::chrono::steady_clock::now() - t0 >= 10ms);
        CHECK(checks == 1);
        CHECK(ready_calls > 1);
    }
    SECTION("a poll failure is an error, not a hang") {
        hv::SpinPolicy policy;
        // One fd at a null address: poll(2) fails with EFAULT.
        CHECK(hv::spin_then_sleep(ready, final_check, nullptr, 1, 10, policy) ==
              hv::WaitOutcome::error);
        CHECK(errno == EFAULT);
    }
}
