// The suites hvbench knows. Each is one bench/suite_<name>.cpp; add a declaration here and a
// row in main.cpp's table. A suite returns 0 on success, non-zero if a case failed to run.
// Suites that run helper domains also declare their helper's command handler (procs.hpp),
// listed in main.cpp's helper table and run as `hvbench --helper NAME CTLPATH`.
#pragma once

#include <string>
#include <vector>

#include "harness.hpp"
#include "procs.hpp"

namespace hv::bench {

int run_ring_suite(Context& ctx);
int run_evtchn_suite(Context& ctx);
int run_grant_suite(Context& ctx);
int run_xs_suite(Context& ctx);
int run_net_suite(Context& ctx);
int run_blk_suite(Context& ctx);

Result<std::string> evtchn_helper(hvmin::Services& svc, const std::vector<std::string>& words,
                                  ControlLine& ctl);
Result<std::string> grant_helper(hvmin::Services& svc, const std::vector<std::string>& words,
                                 ControlLine& ctl);
Result<std::string> blk_helper(hvmin::Services& svc, const std::vector<std::string>& words,
                               ControlLine& ctl);
Result<std::string> net_helper(hvmin::Services& svc, const std::vector<std::string>& words,
                               ControlLine& ctl);

}  // namespace hv::bench
