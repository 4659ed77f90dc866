// What every backend program's main() shares: the common arguments (--rundir, --domain-self,
// -h), connecting to hv-min and the XenStore as dom0 or as the driver domain hv-min started,
// blocking the stop signals, serving until SIGTERM/SIGINT and stopping. A program supplies its
// own options and how to make its BackendDriver. Layer: L1.5 (xenbus + the hv-min client);
// main thread only.
#pragma once

#include <functional>
#include <memory>

#include "hv/expected.hpp"
#include "hvmin/client.hpp"
#include "xenbus/backend_driver.hpp"
#include "xenstore/client.hpp"

namespace hv::xenbus {

struct BackendProgram {
    const char* name = "";      ///< "blkback": log prefix and error messages
    const char* synopsis = "";  ///< "usage: blkback [--rundir DIR] ...\n  Serves ...\n"
    const char* options = "";   ///< help lines of the program's own options
    const char* serves = "";    ///< "vbds": what the log lines say it serves
    /// An argument the common parser does not know, argv[i]; it may take values by advancing
    /// `i` (values exist up to argc). Returns 0 if taken, 2 for a usage error (the helper
    /// prints the usage), anything else to exit with that code (after printing why).
    std::function<int(int argc, char** argv, int& i)> option;
    /// Makes the backend once both connections stand (`domain_self`: as the driver domain hv-min
    /// started, not dom0). Its error is printed; exit code 1.
    std::function<Result<std::unique_ptr<BackendDriver>>(hvmin::Services&, xs::Client&,
                                                         bool domain_self)>
        make;
};

/// The whole main(): parses, connects, serves until a stop signal, stops. Returns the exit code.
int backend_main(int argc, char** argv, const BackendProgram& program);

}  // namespace hv::xenbus
