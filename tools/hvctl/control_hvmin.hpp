// The hv-min implementation of Control (tools/hvctl/control.hpp). Layer: tools.
#pragma once

#include <memory>
#include <string>

#include "control.hpp"

namespace hv::tools {

/// Connects to `rundir`/hv-min.sock as the privileged toolstack (needs root).
Result<std::unique_ptr<Control>> connect_hvmin(const std::string& rundir);
/// $HV_RUNDIR, or /run/hvkit.
std::string default_hvmin_rundir();

}  // namespace hv::tools
