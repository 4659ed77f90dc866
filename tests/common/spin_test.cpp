// hv::spin_until, spin_poll and SpinPolicy: spinning finds what is ready, gives up after its
// budget, and a policy stops spinning once work stops arriving.
#include <catch2/catch.hpp>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"

using namespace std::chrono_literals;

TEST_CASE("spin_until returns as soon as the condition holds and false after its budget",
          "[common][spin]") {
    int calls = 0;
    CHECK(hv::spin_until([&] { return ++calls == 5; }, 1s));
    CHECK(calls == 5);

    calls = 0;
    CHECK_FALSE(hv::spin_until([&] { ++calls; return false; }, 0ns));
    CHECK(calls == 1);  // a zero budget probes exactly once

    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(hv::spin_until([] { return false; }, 2ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 2ms);
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

TEST_CASE("spin_poll reports a readable fd during the spin and after it, and times out",
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
