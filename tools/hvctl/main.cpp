// hvctl: the xl-like toolstack CLI. A thin main: verbs live in cli.cpp and verb_*.cpp.
// Layer: tools. One thread.
#include <signal.h>

#include <iostream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "control_hvmin.hpp"
#include "hv/log.hpp"

int main(int argc, char** argv) {
    hv::log::set_program("hvctl");
    ::signal(SIGPIPE, SIG_IGN);
    const std::vector<std::string> args(argv + 1, argv + argc);
    hv::tools::Cli cli(std::cout, std::cerr, {}, hv::tools::default_hvmin_rundir());
    cli.connect = [&cli] { return hv::tools::connect_hvmin(cli.rundir); };
    const int rc = hv::tools::run_hvctl(cli, args);
    std::cout.flush();
    return rc;
}
