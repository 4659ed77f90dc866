// The suites hvbench knows. Each is one bench/suite_<name>.cpp; add a declaration here and a
// row in main.cpp's table. A suite returns 0 on success, non-zero if a case failed to run.
#pragma once

#include "harness.hpp"

namespace hv::bench {

int run_ring_suite(Context& ctx);

}  // namespace hv::bench
