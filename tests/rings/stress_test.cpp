// Two processes, one shared memfd ring, real notifications through eventfds (one per
// direction), random pauses on both sides: every request and response arrives exactly once,
// in order, and no side ever sleeps through work (a watchdog timeout fails the test). Run
// twice: sleeping at once, and spinning on the ring indices before the final check and sleep
// (hv::spin_then_sleep, the wait hvmin/ring_wait.hpp gives ring users).
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>

#include "hv/mapping.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/ring.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"

#ifndef HV_RINGS_STRESS_COUNT
#define HV_RINGS_STRESS_COUNT 10000000
#endif

using namespace hv::rings;

namespace {

constexpr std::uint64_t stress_requests = HV_RINGS_STRESS_COUNT;
constexpr int watchdog_ms = 5000;   // no legitimate wait comes anywhere near this
constexpr unsigned ring_pages = 2;  // 64 blkif slots: many full/empty transitions

enum Fail : int { ok = 0, lost_wakeup = 10, out_of_order = 11, protocol = 12, io = 13 };

void kick(int fd) {
    const std::uint64_t one = 1;
    if (::write(fd, &one, sizeof one) != sizeof one) {
        std::abort();
    }
}

/// The wait before sleeping: spin on `ready` (within `spin`'s window), then the final check,
/// then sleep until the peer kicks `fd` (consumed). `ok`, or the failure: lost_wakeup when
/// the watchdog expired, protocol when the ring reported an impossible index.
template <class Ready, class FinalCheck>
Fail wait_for_work(Ready&& ready, FinalCheck&& final_check, int fd, hv::SpinPolicy& spin) {
    bool bad = false;
    pollfd p{fd, POLLIN, 0};
    const auto w = hv::spin_then_sleep(
        [&] {
            auto n = ready();
            return !n || *n > 0;
        },
        [&] {
            auto more = final_check();
            bad = !more;
            return !more || *more;
        },
        &p, 1, watchdog_ms, spin);
    if (bad) {
        return protocol;
    }
    switch (w) {
    case hv::WaitOutcome::work:
        return ok;
    case hv::WaitOutcome::fd: {
        std::uint64_t v;
        return ::read(fd, &v, sizeof v) == sizeof v ? ok : io;
    }
    case hv::WaitOutcome::timed_out:
        return lost_wakeup;
    case hv::WaitOutcome::error:
        break;
    }
    return io;
}

/// A random pause: mostly nothing, sometimes a short spin, rarely a yield of the CPU.
struct Jitter {
    explicit Jitter(std::uint32_t seed) : rng(seed) {}
    void maybe_pause() {
        const auto r = static_cast<std::uint32_t>(rng());
        if ((r & 0x3FF) == 0) {
            for (std::uint32_t i = 0; i < (r >> 20); ++i) {
                asm volatile("" ::: "memory");  // a spin the compiler cannot delete
            }
        } else if ((r & 0xFFFF) == 1) {
            ::sched_yield();
        }
    }
    std::minstd_rand rng;
};

/// The back end (child process): take requests in order, answer each with its id.
int run_back(std::span<std::byte> mem, int to_back, int to_front, std::uint32_t seed,
             std::chrono::microseconds spin_window, std::uint64_t total_requests) {
    auto back = BackRing<BlkifProtocol>::attach(mem);
    if (!back) {
        return protocol;
    }
    Jitter jitter(seed ^ 0x9E3779B9u);
    hv::SpinPolicy spin(spin_window);
    std::uint64_t expect = 0;
    while (expect < total_requests) {
        auto n = back->unconsumed();
        if (!n) {
            return protocol;
        }
        while (auto req = back->take_request()) {
            if (req->id != expect || req->sector_number != expect * 8) {
                std::fprintf(stderr, "back: got id %llu, expected %llu\n",
                             static_cast<unsigned long long>(req->id),
                             static_cast<unsigned long long>(expect));
                return out_of_order;
            }
            ++expect;
            blkif_response rsp{};
            rsp.id = req->id;
            rsp.operation = req->operation;
            back->put_response(rsp);
            jitter.maybe_pause();
        }
        if (back->push_responses()) {
            kick(to_front);
        }
        if (expect == total_requests) {
            break;
        }
        const Fail f = wait_for_work([&] { return back->unconsumed(); },
                                     [&] { return back->final_check_for_requests(); }, to_back,
                                     spin);
        if (f != ok) {
            if (f == lost_wakeup) {
                std::fprintf(stderr, "back: lost wake-up at request %llu\n",
                             static_cast<unsigned long long>(expect));
            }
            return f;
        }
    }
    return ok;
}

void run_stress(std::chrono::microseconds spin_window, std::uint64_t total_requests) {
    const std::uint32_t seed = 0x5EED0001u;
    std::printf("rings stress: seed %#x, %llu requests, spin window %lld us\n", seed,
                static_cast<unsigned long long>(total_requests),
                static_cast<long long>(spin_window.count()));
    hv::UniqueFd memfd(::memfd_create("hv-ring-stress", MFD_CLOEXEC));
    REQUIRE(memfd.valid());
    const std::size_t bytes = ring_pages * XEN_PAGE_SIZE;
    REQUIRE(::ftruncate(memfd.get(), static_cast<off_t>(bytes)) == 0);
    auto map = hv::Mapping::map_shared(memfd.get(), bytes);
    REQUIRE(map);
    std::span<std::byte> mem = map->bytes();
    auto front = FrontRing<BlkifProtocol>::init(mem);
    REQUIRE(front);
    hv::UniqueFd to_back(::eventfd(0, EFD_CLOEXEC));
    hv::UniqueFd to_front(::eventfd(0, EFD_CLOEXEC));
    REQUIRE(to_back.valid());
    REQUIRE(to_front.valid());

    const auto t0 = std::chrono::steady_clock::now();
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::alarm(120);  // never outlive a wedged parent
        ::_exit(run_back(mem, to_back.get(), to_front.get(), seed, spin_window,
                         total_requests));
    }

    Jitter jitter(seed);
    hv::SpinPolicy spin(spin_window);
    std::uint64_t sent = 0;
    std::uint64_t answered = 0;
    int failure = ok;
    std::uint64_t waits = 0;
    while (answered < total_requests && failure == ok) {
        while (!front->full() && sent < total_requests) {
            auto& req = front->next_request();
            req = blkif_request{};
            req.operation = BLKIF_OP_READ;
            req.id = sent;
            req.sector_number = sent * 8;
            front->commit_request();
            ++sent;
            jitter.maybe_pause();
        }
        if (front->push_requests()) {
            kick(to_back.get());
        }
        auto n = front->unconsumed_responses();
        if (!n) {
            failure = protocol;
            break;
        }
        while (auto rsp = front->take_response()) {
            if (rsp->id != answered) {
                std::fprintf(stderr, "front: response %llu, expected %llu\n",
                             static_cast<unsigned long long>(rsp->id),
                             static_cast<unsigned long long>(answered));
                failure = out_of_order;
                break;
            }
            ++answered;
        }
        if (failure != ok || answered == total_requests) {
            break;
        }
        // Only sleep when there is nothing more to send (ring full or all sent).
        if (front->full() || sent == total_requests) {
            ++waits;
            failure = wait_for_work([&] { return front->unconsumed_responses(); },
                                    [&] { return front->final_check_for_responses(); },
                                    to_front.get(), spin);
            if (failure == lost_wakeup) {
                std::fprintf(stderr, "front: lost wake-up at response %llu\n",
                             static_cast<unsigned long long>(answered));
            }
        }
    }
    if (failure != ok) {
        ::kill(child, SIGKILL);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rings stress: %.2f s, %.1f M req/s, front waited %llu times\n", secs,
                static_cast<double>(answered) / secs / 1e6,
                static_cast<unsigned long long>(waits));
    CHECK(failure == ok);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == ok);
    CHECK(answered == total_requests);
}

}  // namespace

TEST_CASE("two processes move millions of requests with no loss, duplicate or reorder",
          "[rings][stress]") {
    run_stress(std::chrono::microseconds{0}, stress_requests);
}

TEST_CASE("with a spin budget on both sides no wake-up is lost either", "[rings][stress]") {
    // 20 us: long enough that most waits end in the spin, short enough that random pauses
    // (yields, long jitter spins) keep expiring it, so both paths (spin hit, final check then
    // sleep) run many times. A fifth of the count: on a loaded machine two spinners run slower
    // than two sleepers (the scheduler charges them the spin).
    run_stress(std::chrono::microseconds{20}, stress_requests / 5);
}
