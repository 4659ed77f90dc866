// Assertion failure: print where and abort (a core dump is the useful artefact).
#include "hv/assert.hpp"

#include <cstdlib>

#include "hv/log.hpp"

namespace hv::detail {

void assert_fail(const char* expr, std::source_location where) noexcept {
    HV_ERROR("assertion failed: %s at %s:%u (%s)", expr, where.file_name(),
             static_cast<unsigned>(where.line()), where.function_name());
    std::abort();
}

}  // namespace hv::detail
