// hvctl's CLI in-process for the tools tests, with hv-min unreachable: what a verb prints and
// returns, and whether it tried to connect.
#pragma once

#include <cerrno>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace hv::test {

struct HvctlRun {
    int rc;
    std::string out;
    std::string err;
    bool connected;
};

/// Runs hvctl with a Control factory that reports hv-min unreachable (ECONNREFUSED), and
/// records whether a verb tried to connect.
inline HvctlRun hvctl(std::vector<std::string> args) {
    std::ostringstream out;
    std::ostringstream err;
    bool connected = false;
    hv::tools::Cli cli(
        out, err,
        [&connected]() -> hv::Result<std::unique_ptr<hv::tools::Control>> {
            connected = true;
            return hv::fail_errno(ECONNREFUSED);
        },
        "/nonexistent/rundir");
    const int rc = hv::tools::run_hvctl(cli, args);
    return {rc, out.str(), err.str(), connected};
}

}  // namespace hv::test
