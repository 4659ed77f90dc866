// HV_ASSERT (always on) and HV_DASSERT (debug builds): our own bugs, never guest faults.
// Layer: common. Any thread. Uses __builtin_FILE/LINE rather than std::source_location, which
// clang 14 with libstdc++ 12 (the fuzz build) does not provide.
#pragma once

namespace hv::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, unsigned line,
                              const char* function) noexcept;
}

#define HV_ASSERT(cond)                                                                   \
    do {                                                                                  \
        if (!(cond)) [[unlikely]] {                                                       \
            ::hv::detail::assert_fail(#cond, __builtin_FILE(), __builtin_LINE(),          \
                                      __builtin_FUNCTION());                              \
        }                                                                                 \
    } while (0)

#ifdef NDEBUG
#define HV_DASSERT(cond) \
    do {                 \
    } while (0)
#else
#define HV_DASSERT(cond) HV_ASSERT(cond)
#endif
