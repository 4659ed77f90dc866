// spin_poll and the HVKIT_POLL_US default (see spin.hpp).
#include "hv/spin.hpp"

#include <sys/epoll.h>

#include <cerrno>
#include <cstdlib>

namespace hv {

namespace {

/// Calls `wait(0)` until it returns non-zero or `spin` has passed, then `wait(rest)` with what
/// is left of `timeout_ms` (-1 = forever). `wait` is poll(2) or epoll_wait(2) with a timeout.
template <class Wait>
int spin_then_wait(Wait&& wait, int timeout_ms, std::chrono::microseconds spin) noexcept {
    using Clock = std::chrono::steady_clock;
    if (spin.count() > 0) {
        const auto start = Clock::now();
        const auto end = start + spin;
        for (;;) {
            const int r = wait(0);
            if (r != 0) {
                return r;
            }
            if (Clock::now() >= end) {
                break;
            }
            cpu_relax();
        }
        if (timeout_ms == 0) {
            return 0;
        }
        if (timeout_ms > 0) {
            const auto spent =
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
            timeout_ms = spent.count() >= timeout_ms ? 0 : timeout_ms - static_cast<int>(spent.count());
        }
    }
    return wait(timeout_ms);
}

}  // namespace

int spin_poll(pollfd* fds, nfds_t n, int timeout_ms, std::chrono::microseconds spin) noexcept {
    return spin_then_wait([&](int t) { return ::poll(fds, n, t); }, timeout_ms, spin);
}

int spin_epoll_wait(int epfd, epoll_event* evs, int max_events, int timeout_ms,
                    std::chrono::microseconds spin) noexcept {
    return spin_then_wait([&](int t) { return ::epoll_wait(epfd, evs, max_events, t); },
                          timeout_ms, spin);
}

std::chrono::microseconds default_spin() noexcept {
    static const std::chrono::microseconds value = [] {
        const char* s = std::getenv("HVKIT_POLL_US");
        if (s == nullptr || *s == '\0') {
            return std::chrono::microseconds{0};
        }
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || v <= 0) {
            return std::chrono::microseconds{0};
        }
        return std::chrono::microseconds{v > 1'000'000 ? 1'000'000 : v};
    }();
    return value;
}

std::chrono::microseconds default_spin_or(std::chrono::microseconds fallback) noexcept {
    static const bool set = [] {
        const char* s = std::getenv("HVKIT_POLL_US");
        return s != nullptr && *s != '\0';
    }();
    return set ? default_spin() : fallback;
}

}  // namespace hv
