// CPU affinity helpers. Header-only, layer: common.
#pragma once

#include <sched.h>

namespace hv {

/// The lowest-numbered CPU the calling thread may run on (0 if the mask cannot be read): where
/// a single pinned helper (a DPDK main lcore, say) goes.
inline unsigned first_allowed_cpu() noexcept {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
            if (CPU_ISSET(c, &set)) {
                return c;
            }
        }
    }
    return 0;
}

}  // namespace hv
