// spin_poll and the HVKIT_POLL_US default (see spin.hpp).
#include "hv/spin.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
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
    // One word shared by every thread of the process: the time of the last sample in
    // milliseconds (upper 48 bits) and LoadShare::over (lower 16). A thread that finds a new
    // millisecond takes a sample and publishes it with a compare-exchange; if another thread
    // published first, the sample is dropped and that thread's answer is taken.
    static std::atomic<std::uint64_t> state{0};
    static const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    const auto now_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now().time_since_epoch())
            .count());
    auto share_of = [](std::uint64_t s) {
        return LoadShare{static_cast<std::int32_t>(s & 0xffffU)};
    };
    std::uint64_t s = state.load(std::memory_order_relaxed);
    const std::uint64_t last_ms = s >> 16;
    if (now_ms <= last_ms) {
        return share_of(s).oversubscribed();
    }
    LoadShare share = share_of(s);
    share.sample(runnable_threads(), cpus,
                 std::chrono::milliseconds(static_cast<std::int64_t>(
                     std::min<std::uint64_t>(now_ms - last_ms, 1000))));
    const std::uint64_t next = (now_ms << 16) | static_cast<std::uint64_t>(share.over);
    if (!state.compare_exchange_strong(s, next, std::memory_order_relaxed)) {
        return share_of(s).oversubscribed();
    }
    return share.oversubscribed();
}

}  // namespace hv
