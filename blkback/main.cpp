// The `blkback` program: serves every vbd whose backend is this domain until SIGTERM/SIGINT.
// As dom0 it connects to hv-min's socket and XenStore socket; started by hv-min as a driver
// domain's program (HV_HYPERCALL_FD set, or --domain-self) it attaches and takes its own
// XenStore connection (xenbus::backend_main). Thin: its own options only.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "blkback/device.hpp"
#include "xenbus/backend_main.hpp"

int main(int argc, char** argv) {
    hv::blk::BackendOptions opt;
    hv::xenbus::BackendProgram p;
    p.name = "blkback";
    p.serves = "vbds";
    p.synopsis =
        "usage: blkback [--rundir DIR] [--domain-self] [--copy-mode] [--max-queues N]\n"
        "               [--poll-us N]\n"
        "  Serves the vbds of /local/domain/<self>/backend/vbd until SIGTERM.\n";
    p.options =
        "  --copy-mode      grant copy even when trusted (default: map when trusted)\n"
        "  --max-queues N   multi-queue-max-queues (default: number of CPUs)\n"
        "  --poll-us N      polling mode: spin up to N us on each ring and its io_uring\n"
        "                   completions before sleeping (default $HVKIT_POLL_US or 0;\n"
        "                   a vbd's backend key poll-us overrides it)\n";
    p.option = [&](int n, char** args, int& i) {
        const std::string_view a = args[i];
        if (a == "--copy-mode") {
            opt.mode = hv::blk::DataMode::copy;
        } else if (a == "--max-queues" && i + 1 < n) {
            opt.max_queues = static_cast<unsigned>(std::strtoul(args[++i], nullptr, 10));
        } else if (a == "--poll-us" && i + 1 < n) {
            auto us = hv::xenbus::parse_uint(args[++i], 1'000'000);
            if (!us) {
                std::fprintf(stderr, "blkback: --poll-us: microseconds, 0 to 1000000\n");
                return 2;
            }
            opt.spin = std::chrono::microseconds(*us);
        } else {
            return 2;
        }
        return 0;
    };
    p.make = [&](hv::hvmin::Services& hv, hv::xs::Client& xs, bool) {
        return hv::xenbus::upcast<hv::xenbus::BackendDriver>(hv::blk::Backend::create(hv, xs, opt));
    };
    return hv::xenbus::backend_main(argc, argv, p);
}
