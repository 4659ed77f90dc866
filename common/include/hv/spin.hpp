// Adaptive spinning before a sleep: the polling lever shared by every waiter (ring workers,
// the hypercall client, event channel waits, the XenStore server). Layer: common.
//
// On this kind of machine an idle vCPU takes tens of microseconds to wake, so a path that
// sleeps between two messages pays that twice per round trip. Spinning for a short budget
// before sleeping removes it while traffic flows; a waiter that found nothing for a whole
// window goes back to sleeping, so an idle process never burns a core.
//
// Budgets come from each component's own option; `default_spin()` is the process-wide default
// those options start from (environment `HVKIT_POLL_US`, microseconds; unset or 0 = never spin).
#pragma once

#include <poll.h>
#include <sched.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

struct epoll_event;

namespace hv {

/// One CPU relax hint (x86 `pause`); a plain compiler barrier elsewhere.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    asm volatile("" ::: "memory");
#endif
}

/// Whether spin_until gives way while it spins. `every_64`: every 64th probe calls
/// sched_yield(), which returns at once when no other task is runnable on this CPU. When a
/// machine has fewer free cores than spinners, the peer that would produce the work then runs
/// instead of waiting out the spinner's time slice (measured: QD1 block I/O p50 3.7 ms → 0.2 ms
/// at load 20 on 2 cores). Use it where the awaited work comes from another thread or process
/// of this host (a ring's peer, io_uring's kernel worker); a spin on memory only the hardware
/// or a peer on its own core writes needs no yield.
enum class SpinYield : bool { no, every_64 };

/// Calls `ready()` until it returns true or `budget` has passed. True when ready() was.
/// A zero budget calls ready() exactly once. Never sleeps (sched_yield() is not a sleep: the
/// spinner stays runnable).
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds budget, SpinYield yield = SpinYield::no) {
    if (ready()) {
        return true;
    }
    if (budget.count() <= 0) {
        return false;
    }
    const auto end = std::chrono::steady_clock::now() + budget;
    for (unsigned rounds = 1;; ++rounds) {
        for (int i = 0; i < 32; ++i) {  // read the clock only every few probes
            cpu_relax();
            if (ready()) {
                return true;
            }
        }
        if (yield == SpinYield::every_64 && (rounds & 1U) == 0) {
            ::sched_yield();  // every second round of 32 probes
        }
        if (std::chrono::steady_clock::now() >= end) {
            return ready();
        }
    }
}

/// poll(2) that first polls with a zero timeout for up to `spin`, then sleeps for the rest of
/// `timeout_ms` (-1 = forever). Same return value and errno as poll(2); EINTR is returned.
int spin_poll(pollfd* fds, nfds_t n, int timeout_ms, std::chrono::microseconds spin) noexcept;

/// epoll_wait(2) that first waits with a zero timeout for up to `spin`, then sleeps for the
/// rest of `timeout_ms` (-1 = forever). Same return value and errno as epoll_wait(2).
int spin_epoll_wait(int epfd, epoll_event* evs, int max_events, int timeout_ms,
                    std::chrono::microseconds spin) noexcept;

/// The process-wide default spin budget: `HVKIT_POLL_US` read once (0 when unset or invalid,
/// capped at one second).
std::chrono::microseconds default_spin() noexcept;

/// The rule behind cpus_oversubscribed(), apart from the /proc read so that tests can feed it
/// samples. `over` is the share of recent time in which more threads were runnable than there
/// are CPUs, in 1/65535ths: each sample moves it 1/8 of the way towards all (more runnable than
/// CPUs) or none, once for each millisecond since the previous sample but at most 4 times (a
/// sample after a pause stands for 4 ms at most, so neither it nor the history before the pause
/// decides alone): an average over the last ~8 ms. Oversubscribed while the share is above
/// half. So a machine with more runnable threads than CPUs in every sample is seen as such
/// after 6 samples a millisecond apart (2 after pauses), and so is one where that holds in most
/// samples; with exactly as many spinners as CPUs, one more task runnable for a moment (a kernel
/// worker, a statistics write, a shell) must stay so for 6 ms in a row to stop the spinning.
struct LoadShare {
    static constexpr std::int32_t kAll = 65535;
    std::int32_t over = 0;  ///< 0..kAll

    /// One sample: `runnable` threads (negative: unreadable, counted as not over) against
    /// `cpus` (not over when not positive), `since_last` after the previous sample.
    constexpr void sample(long runnable, long cpus, std::chrono::milliseconds since_last) noexcept {
        const std::int32_t target = cpus > 0 && runnable > cpus ? kAll : 0;
        const auto steps = since_last.count() < 1 ? 1 : since_last.count() > 4 ? 4 : since_last.count();
        for (auto i = steps; i > 0; --i) {
            over += (target - over) / 8;
        }
    }
    constexpr bool oversubscribed() const noexcept { return over > kAll / 2; }
};

/// True while more threads have been runnable than there are CPUs in most of the last few
/// milliseconds (LoadShare over the running count of /proc/loadavg, re-read at most once a
/// millisecond per process). Spinning then only delays the thread being waited for: a spinner
/// that loses its CPU is runnable, not sleeping, so a message for it no longer earns it the
/// wake-up preemption a sleeper gets, and it waits out a time slice. A moment's extra runnable
/// task does not count: spinners on every CPU would otherwise all stop for it.
/// Always false after set_spin_ignores_load(true) (tests of spinning itself, which must spin on
/// a loaded machine too).
bool cpus_oversubscribed() noexcept;
void set_spin_ignores_load(bool ignore) noexcept;

/// Decides whether a waiter spins: only while work arrived within `window` of now. A waiter
/// calls `worked()` whenever a pass found something to do and asks `budget()` before sleeping;
/// after a quiet window the budget drops to zero and the waiter sleeps at once. A waiter that
/// also checks cpus_oversubscribed() (the XenStore server and client do) spins even less.
class SpinPolicy {
public:
    SpinPolicy() noexcept = default;
    explicit SpinPolicy(std::chrono::microseconds window) noexcept : window_(window) {}

    void worked() noexcept {
        if (window_.count() > 0) {
            last_work_ = std::chrono::steady_clock::now();
        }
    }
    /// How long to spin before the next sleep (zero when disabled or idle for a window).
    std::chrono::microseconds budget() const noexcept {
        if (window_.count() <= 0) {
            return {};
        }
        const auto idle = std::chrono::steady_clock::now() - last_work_;
        return idle < window_ ? window_ : std::chrono::microseconds{0};
    }
    std::chrono::microseconds window() const noexcept { return window_; }
    bool enabled() const noexcept { return window_.count() > 0; }

private:
    std::chrono::microseconds window_{0};
    std::chrono::steady_clock::time_point last_work_{};
};

/// What ended a spin_then_sleep().
enum class WaitOutcome {
    work,       ///< `ready()` or the final check found work (found while spinning or armed)
    fd,         ///< one of the fds is readable (an event, a stop request, a completion)
    timed_out,  ///< neither within `timeout_ms`
    error,      ///< poll(2) failed; errno is set
};

/// The wait of a ring consumer or producer (xen-abi §1.5) with adaptive spinning:
///  1. if `policy` allows it, spin on `ready()` (a shared-memory check such as "the peer's
///     producer index moved": no syscall per probe) for the policy's budget. The event
///     threshold is not armed yet, so a peer that produces now sends no notification;
///  2. `final_check()`: arm the event threshold, full fence, re-check (true = work: do not
///     sleep). A ring protocol error should return true too, so the caller's next drain sees
///     and reports it;
///  3. sleep in poll(2) on `fds` (the event channel's fd first, then e.g. a stop or engine fd)
///     for at most `timeout_ms` (-1 = forever). EINTR sleeps again for the full timeout.
/// Work found (1, 2) and an event (3) count as work for `policy`, so the next wait spins.
/// While spinning the fds are not looked at: a stop request or completion waits at most the
/// budget, unless `ready()` also checks it.
template <class Ready, class FinalCheck>
WaitOutcome spin_then_sleep(Ready&& ready, FinalCheck&& final_check, pollfd* fds, nfds_t n,
                            int timeout_ms, SpinPolicy& policy) {
    const auto budget = policy.budget();
    if (budget.count() > 0 && spin_until(ready, budget)) {
        policy.worked();
        return WaitOutcome::work;
    }
    if (final_check()) {
        policy.worked();
        return WaitOutcome::work;
    }
    for (;;) {
        const int r = ::poll(fds, n, timeout_ms);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return WaitOutcome::error;
        }
        if (r == 0) {
            return WaitOutcome::timed_out;
        }
        policy.worked();
        return WaitOutcome::fd;
    }
}

}  // namespace hv
