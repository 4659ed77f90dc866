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

#include <chrono>
#include <cstdint>

namespace hv {

/// One CPU relax hint (x86 `pause`); a plain compiler barrier elsewhere.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    asm volatile("" ::: "memory");
#endif
}

/// Calls `ready()` until it returns true or `budget` has passed. True when ready() was.
/// A zero budget calls ready() exactly once. Never sleeps.
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds budget) {
    if (ready()) {
        return true;
    }
    if (budget.count() <= 0) {
        return false;
    }
    const auto end = std::chrono::steady_clock::now() + budget;
    for (;;) {
        for (int i = 0; i < 32; ++i) {  // read the clock only every few probes
            cpu_relax();
            if (ready()) {
                return true;
            }
        }
        if (std::chrono::steady_clock::now() >= end) {
            return ready();
        }
    }
}

/// poll(2) that first polls with a zero timeout for up to `spin`, then sleeps for the rest of
/// `timeout_ms` (-1 = forever). Same return value and errno as poll(2); EINTR is returned.
int spin_poll(pollfd* fds, nfds_t n, int timeout_ms, std::chrono::microseconds spin) noexcept;

/// The process-wide default spin budget: `HVKIT_POLL_US` read once (0 when unset or invalid,
/// capped at one second).
std::chrono::microseconds default_spin() noexcept;

/// Decides whether a waiter spins: only while work arrived within `window` of now. A waiter
/// calls `worked()` whenever a pass found something to do and asks `budget()` before sleeping;
/// after a quiet window the budget drops to zero and the waiter sleeps at once.
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

}  // namespace hv
