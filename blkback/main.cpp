// The `blkback` program: serves every vbd whose backend is this domain until SIGTERM/SIGINT.
// As dom0 it connects to hv-min's socket and XenStore socket; started by hv-min as a driver
// domain's program (HV_HYPERCALL_FD set, or --domain-self) it attaches and takes its own
// XenStore connection. Thin: argument parsing and wiring only.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "blkback/device.hpp"
#include "hv/log.hpp"
#include "hvmin/client.hpp"
#include "xenstore/client.hpp"

namespace {

void usage(std::FILE* f) {
    std::fprintf(f,
                 "usage: blkback [--rundir DIR] [--domain-self] [--copy-mode] [--max-queues N]\n"
                 "               [--poll-us N]\n"
                 "  Serves the vbds of /local/domain/<self>/backend/vbd until SIGTERM.\n"
                 "  --rundir DIR     hv-min's run directory (default $HV_RUNDIR or /run/hvkit)\n"
                 "  --domain-self    run as the domain hv-min started (HV_HYPERCALL_FD)\n"
                 "  --copy-mode      grant copy even when trusted (default: map when trusted)\n"
                 "  --max-queues N   multi-queue-max-queues (default: number of CPUs)\n"
                 "  --poll-us N      polling mode: spin up to N us on each ring and its io_uring\n"
                 "                   completions before sleeping (default $HVKIT_POLL_US or 0;\n"
                 "                   a vbd's backend key poll-us overrides it)\n");
}

int run(int argc, char** argv) {
    std::filesystem::path rundir = hv::hvmin::default_rundir();
    bool domain_self = std::getenv("HV_HYPERCALL_FD") != nullptr;
    hv::blk::BackendOptions opt;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--rundir" && i + 1 < argc) {
            rundir = argv[++i];
        } else if (a == "--domain-self") {
            domain_self = true;
        } else if (a == "--copy-mode") {
            opt.mode = hv::blk::DataMode::copy;
        } else if (a == "--max-queues" && i + 1 < argc) {
            opt.max_queues = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
        } else if (a == "--poll-us" && i + 1 < argc) {
            auto us = hv::xenbus::parse_uint(argv[++i], 1'000'000);
            if (!us) {
                std::fprintf(stderr, "blkback: --poll-us: microseconds, 0 to 1000000\n");
                return 2;
            }
            opt.spin = std::chrono::microseconds(*us);
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    // Block the stop signals before any thread starts, so only sigwait() sees them.
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);

    auto svc = domain_self ? hv::hvmin::attach() : hv::hvmin::connect_dom0(rundir);
    if (!svc) {
        std::fprintf(stderr, "blkback: %s: %s\n", domain_self ? "attach" : "connect to hv-min",
                     svc.error().message().c_str());
        return 1;
    }
    hv::Result<std::unique_ptr<hv::xs::Client>> xs = hv::fail_errno(ENOENT);
    if (domain_self) {
        hv::UniqueFd fd = svc->take_xenstore_fd();
        if (fd.get() < 0) {
            std::fprintf(stderr, "blkback: this domain has no XenStore connection\n");
            return 1;
        }
        xs = hv::xs::Client::from_fd(std::move(fd));
    } else {
        xs = hv::xs::Client::connect((rundir / "xenstored.sock").string());
    }
    if (!xs) {
        std::fprintf(stderr, "blkback: XenStore: %s\n", xs.error().message().c_str());
        return 1;
    }
    auto backend = hv::blk::Backend::create(*svc, **xs, opt);
    if (!backend) {
        std::fprintf(stderr, "blkback: %s\n", backend.error().message().c_str());
        return 1;
    }
    HV_INFO("blkback: serving domain %u's vbds", svc->domid().get());
    (*backend)->start();
    int sig = 0;
    sigwait(&stop_set, &sig);
    HV_INFO("blkback: signal %d: disconnecting every vbd", sig);
    (*backend)->stop();
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
