// Assertion failure: print where and abort (a core dump is the useful artefact).
#include "hv/assert.hpp"

#include <cstdlib>

#include "hv/log.hpp"

namespace hv::detail {

void assert_fail(const char* expr, const char* file, unsigned line,
                 const char* function) noexcept {
    HV_ERROR("assertion failed: %s at %s:%u (%s)", expr, file, line, function);
    std::abort();
}

}  // namespace hv::detail
