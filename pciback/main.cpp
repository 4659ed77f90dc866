// The `pciback` program: serves every frontend's PCI bus whose backend is this domain until
// SIGTERM/SIGINT, and hosts the emulated devices named by --emulate. The common arguments,
// connections and signals are xenbus::backend_main's. Thin: its own options only.
#include <chrono>
#include <cstdio>
#include <string_view>
#include <thread>

#include "hv/log.hpp"
#include "pciback/device.hpp"
#include "xenbus/backend_main.hpp"

namespace {

constexpr auto kRegistryWaitStep = std::chrono::milliseconds(20);
constexpr int kRegistryWaitSteps = 500;  // 10 s

}  // namespace

int main(int argc, char** argv) {
    hv::pci::BackendOptions opt;
    hv::xenbus::BackendProgram p;
    p.name = "pciback";
    p.serves = "PCI buses";
    p.synopsis =
        "usage: pciback [--rundir DIR] [--domain-self] [--emulate BDF=MODEL[,opts]]...\n"
        "               [--sysfs DIR]\n"
        "  Serves the PCI buses of /local/domain/<self>/backend/pci until SIGTERM.\n";
    p.options =
        "  --emulate B=M    host an emulated device of model M (\"testdev\") at B, a BDF\n"
        "                   in a segment the host does not use (e.g. 0001:00:02.0)\n"
        "  --sysfs DIR      where host devices are found (default /sys/bus/pci/devices)\n";
    p.option = [&](int n, char** args, int& i) {
        const std::string_view a = args[i];
        if (a == "--emulate" && i + 1 < n) {
            auto e = hv::pci::parse_emulate(args[++i]);
            if (!e) {
                std::fprintf(stderr, "pciback: --emulate %s: %s (models: testdev)\n", args[i],
                             e.error().message().c_str());
                return 2;
            }
            opt.emulated.push_back(*e);
        } else if (a == "--sysfs" && i + 1 < n) {
            opt.sysfs_root = args[++i];
        } else {
            return 2;
        }
        return 0;
    };
    p.make = [&](hv::hvmin::Services& hv, hv::xs::Client& xs, bool domain_self) {
        HV_INFO("pciback: %zu emulated device(s)", opt.emulated.size());
        auto backend = hv::pci::Backend::create(hv, xs, opt);
        // A driver domain finds its emulated devices in the toolstack's registry, where
        // `hvctl create` records them just after starting it: EACCES until then (bounded wait).
        for (int i = 0; domain_self && !backend &&
                        backend.error() == std::errc::permission_denied &&
                        !opt.emulated.empty() && i < kRegistryWaitSteps;
             ++i) {
            std::this_thread::sleep_for(kRegistryWaitStep);
            backend = hv::pci::Backend::create(hv, xs, opt);
        }
        return hv::xenbus::upcast<hv::xenbus::BackendDriver>(std::move(backend));
    };
    return hv::xenbus::backend_main(argc, argv, p);
}
