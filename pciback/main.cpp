// The `pciback` program: serves every frontend's PCI bus whose backend is this domain until
// SIGTERM/SIGINT, and hosts the emulated devices named by --emulate. Thin: arguments and
// wiring only.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>

#include "hv/log.hpp"
#include "hvmin/client.hpp"
#include "pciback/device.hpp"
#include "xenstore/client.hpp"

namespace {

constexpr auto kRegistryWaitStep = std::chrono::milliseconds(20);
constexpr int kRegistryWaitSteps = 500;  // 10 s

void usage(std::FILE* f) {
    std::fprintf(f,
                 "usage: pciback [--rundir DIR] [--domain-self] [--emulate BDF=MODEL[,opts]]...\n"
                 "               [--sysfs DIR]\n"
                 "  Serves the PCI buses of /local/domain/<self>/backend/pci until SIGTERM.\n"
                 "  --rundir DIR     hv-min's run directory (default $HV_RUNDIR or /run/hvkit)\n"
                 "  --domain-self    run as the domain hv-min started (HV_HYPERCALL_FD)\n"
                 "  --emulate B=M    host an emulated device of model M (\"testdev\") at B, a BDF\n"
                 "                   in a segment the host does not use (e.g. 0001:00:02.0)\n"
                 "  --sysfs DIR      where host devices are found (default /sys/bus/pci/devices)\n");
}

int run(int argc, char** argv) {
    hv::log::set_program("pciback");
    std::filesystem::path rundir = hv::hvmin::default_rundir();
    bool domain_self = std::getenv("HV_HYPERCALL_FD") != nullptr;
    hv::pci::BackendOptions opt;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--rundir" && i + 1 < argc) {
            rundir = argv[++i];
        } else if (a == "--domain-self") {
            domain_self = true;
        } else if (a == "--emulate" && i + 1 < argc) {
            auto e = hv::pci::parse_emulate(argv[++i]);
            if (!e) {
                std::fprintf(stderr, "pciback: --emulate %s: %s (models: testdev)\n", argv[i],
                             e.error().message().c_str());
                return 2;
            }
            opt.emulated.push_back(*e);
        } else if (a == "--sysfs" && i + 1 < argc) {
            opt.sysfs_root = argv[++i];
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);

    auto svc = domain_self ? hv::hvmin::attach() : hv::hvmin::connect_dom0(rundir);
    if (!svc) {
        std::fprintf(stderr, "pciback: %s: %s\n", domain_self ? "attach" : "connect to hv-min",
                     svc.error().message().c_str());
        return 1;
    }
    hv::Result<std::unique_ptr<hv::xs::Client>> xs = hv::fail_errno(ENOENT);
    if (domain_self) {
        hv::UniqueFd fd = svc->take_xenstore_fd();
        if (fd.get() < 0) {
            std::fprintf(stderr, "pciback: this domain has no XenStore connection\n");
            return 1;
        }
        xs = hv::xs::Client::from_fd(std::move(fd));
    } else {
        xs = hv::xs::Client::connect((rundir / "xenstored.sock").string());
    }
    if (!xs) {
        std::fprintf(stderr, "pciback: XenStore: %s\n", xs.error().message().c_str());
        return 1;
    }
    auto backend = hv::pci::Backend::create(*svc, **xs, opt);
    // A driver domain announces its emulated devices in the toolstack's registry, which
    // `hvctl create` opens to it just after starting it: EACCES until then (bounded wait).
    for (int i = 0; domain_self && !backend && backend.error() == std::errc::permission_denied &&
                        !opt.emulated.empty() && i < kRegistryWaitSteps;
         ++i) {
        std::this_thread::sleep_for(kRegistryWaitStep);
        backend = hv::pci::Backend::create(*svc, **xs, opt);
    }
    if (!backend) {
        std::fprintf(stderr, "pciback: %s\n", backend.error().message().c_str());
        return 1;
    }
    HV_INFO("pciback: serving domain %u's PCI buses (%zu emulated device(s))", svc->domid().get(),
            opt.emulated.size());
    (*backend)->start();
    int sig = 0;
    sigwait(&stop_set, &sig);
    HV_INFO("pciback: signal %d: releasing every device", sig);
    backend->reset();
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
