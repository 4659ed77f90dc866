// spin_poll and the HVKIT_POLL_US default (see spin.hpp).
#include "hv/spin.hpp"

#include <cerrno>
#include <cstdlib>

namespace hv {

int spin_poll(pollfd* fds, nfds_t n, int timeout_ms, std::chrono::microseconds spin) noexcept {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    if (spin.count() > 0) {
        const auto end = start + spin;
        for (;;) {
            const int r = ::poll(fds, n, 0);
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
    return ::poll(fds, n, timeout_ms);
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

}  // namespace hv
