// Logging implementation: one write(2) per line so concurrent threads never interleave.
#include "hv/log.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace hv::log {
namespace {

Level initial_threshold() noexcept {
    const char* env = std::getenv("HV_LOG");
    if (env == nullptr) {
        return Level::info;
    }
    if (std::strcmp(env, "debug") == 0) {
        return Level::debug;
    }
    if (std::strcmp(env, "warn") == 0) {
        return Level::warn;
    }
    if (std::strcmp(env, "error") == 0) {
        return Level::error;
    }
    return Level::info;
}

std::atomic<int> g_threshold{static_cast<int>(initial_threshold())};
std::atomic<const char*> g_program{"hvkit"};

const char* level_name(Level l) noexcept {
    switch (l) {
        case Level::debug:
            return "debug";
        case Level::info:
            return "info";
        case Level::warn:
            return "warn";
        case Level::error:
            return "error";
    }
    return "?";
}

}  // namespace

Level threshold() noexcept { return static_cast<Level>(g_threshold.load()); }
void set_threshold(Level l) noexcept { g_threshold.store(static_cast<int>(l)); }
void set_program(const char* name) noexcept { g_program.store(name); }

void vwrite(Level l, const char* fmt, va_list ap) noexcept {
    if (static_cast<int>(l) < g_threshold.load(std::memory_order_relaxed)) {
        return;
    }
    char line[1024];
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    tm tmv{};
    ::gmtime_r(&ts.tv_sec, &tmv);
    int n = std::snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s[%d] %s: ", tmv.tm_hour,
                          tmv.tm_min, tmv.tm_sec, ts.tv_nsec / 1000000, g_program.load(),
                          static_cast<int>(::getpid()), level_name(l));
    if (n < 0) {
        return;
    }
    std::size_t used = static_cast<std::size_t>(n);
    int m = std::vsnprintf(line + used, sizeof line - used, fmt, ap);
    if (m > 0) {
        used += static_cast<std::size_t>(m);
    }
    if (used > sizeof line - 2) {
        used = sizeof line - 2;
    }
    line[used++] = '\n';
    ssize_t r = ::write(STDERR_FILENO, line, used);
    (void)r;
}

void write(Level l, const char* fmt, ...) noexcept {
    va_list ap;
    va_start(ap, fmt);
    vwrite(l, fmt, ap);
    va_end(ap);
}

bool RateLimit::allow(std::uint64_t& suppressed) noexcept {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
    std::int64_t w = window_.load(std::memory_order_relaxed);
    if (w != now && window_.compare_exchange_strong(w, now, std::memory_order_relaxed)) {
        used_.store(0, std::memory_order_relaxed);
    }
    if (used_.fetch_add(1, std::memory_order_relaxed) < burst_) {
        suppressed = dropped_.exchange(0, std::memory_order_relaxed);
        return true;
    }
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
}

}  // namespace hv::log
