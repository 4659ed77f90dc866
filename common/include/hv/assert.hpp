// HV_ASSERT (always on) and HV_DASSERT (debug builds): our own bugs, never guest faults.
// Layer: common. Any thread.
#pragma once

#include <source_location>

namespace hv::detail {
[[noreturn]] void assert_fail(const char* expr, std::source_location where) noexcept;
}

#define HV_ASSERT(cond)                                                          \
    do {                                                                         \
        if (!(cond)) [[unlikely]] {                                              \
            ::hv::detail::assert_fail(#cond, std::source_location::current());   \
        }                                                                        \
    } while (0)

#ifdef NDEBUG
#define HV_DASSERT(cond) \
    do {                 \
    } while (0)
#else
#define HV_DASSERT(cond) HV_ASSERT(cond)
#endif
