// spin_poll and the HVKIT_POLL_US default (see spin.hpp).
#include "hv/spin.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
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
            sched_yield();
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

namespace {

/// The running count ("R/T", 4th field) of /proc/loadavg; -1 when unreadable.
long runnable_threads() noexcept {
    static const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    char buf[128];
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    const char* p = buf;
    for (int field = 0; field < 3; ++field) {  // skip the three load averages
        while (*p != '\0' && *p != ' ') {
            ++p;
        }
        while (*p == ' ') {
            ++p;
        }
    }
    char* end = nullptr;
    const long running = std::strtol(p, &end, 10);
    return end != p && *end == '/' ? running : -1;
}

std::atomic<bool> g_ignore_load{false};

}  // namespace

void set_spin_ignores_load(bool ignore) noexcept {
    g_ignore_load.store(ignore, std::memory_order_relaxed);
}

bool cpus_oversubscribed() noexcept {
    if (g_ignore_load.load(std::memory_order_relaxed)) {
        return false;
    }
    using Clock = std::chrono::steady_clock;
    static std::atomic<Clock::rep> next_check{0};
    static std::atomic<bool> busy{false};
    static const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    const auto now = Clock::now().time_since_epoch().count();
    // Racy by design: two threads may both re-read; each stores a fresh answer.
    if (now < next_check.load(std::memory_order_relaxed)) {
        return busy.load(std::memory_order_relaxed);
    }
    next_check.store(now + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::milliseconds(1)).count(),
                     std::memory_order_relaxed);
    const long running = runnable_threads();
    const bool b = cpus > 0 && running > cpus;
    busy.store(b, std::memory_order_relaxed);
    return b;
}

}  // namespace hv
