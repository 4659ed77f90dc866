// Logging to stderr with a level, a component tag and a rate limiter for guest-triggered
// messages. Layer: common. Thread-safe (one write(2) per line).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>

namespace hv::log {

enum class Level : int { debug = 0, info = 1, warn = 2, error = 3 };

/// Messages below this level are dropped. Default: info, or HV_LOG=debug|info|warn|error.
Level threshold() noexcept;
void set_threshold(Level l) noexcept;
/// Prefix every line with this program name (default: "hvkit").
void set_program(const char* name) noexcept;

void write(Level l, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));
void vwrite(Level l, const char* fmt, va_list ap) noexcept;

/// Lets through at most `burst` messages per second; counts the rest and reports them with the
/// next message it lets through. One per call site (static local), lock-free.
class RateLimit {
public:
    explicit RateLimit(std::uint32_t burst = 10) noexcept : burst_(burst) {}
    /// True if this message may be printed; `suppressed` receives how many were dropped since.
    bool allow(std::uint64_t& suppressed) noexcept;

private:
    std::uint32_t burst_;
    std::atomic<std::int64_t> window_{0};
    std::atomic<std::uint32_t> used_{0};
    std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace hv::log

#define HV_LOG(level, ...) ::hv::log::write(::hv::log::Level::level, __VA_ARGS__)
#define HV_DEBUG(...) HV_LOG(debug, __VA_ARGS__)
#define HV_INFO(...) HV_LOG(info, __VA_ARGS__)
#define HV_WARN(...) HV_LOG(warn, __VA_ARGS__)
#define HV_ERROR(...) HV_LOG(error, __VA_ARGS__)
/// For messages a guest can trigger: at most 10 a second per call site.
#define HV_LOG_RL(level, fmt, ...)                                                    \
    do {                                                                              \
        static ::hv::log::RateLimit hv_rl_;                                           \
        std::uint64_t hv_sup_ = 0;                                                    \
        if (hv_rl_.allow(hv_sup_)) {                                                  \
            if (hv_sup_ != 0) {                                                       \
                HV_LOG(level, "(%llu similar messages suppressed)",                   \
                       static_cast<unsigned long long>(hv_sup_));                     \
            }                                                                         \
            HV_LOG(level, fmt __VA_OPT__(, ) __VA_ARGS__);                            \
        }                                                                             \
    } while (0)
