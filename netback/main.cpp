// The `netback` program: serves every vif whose backend is this domain until SIGTERM/SIGINT.
// As dom0 it connects to hv-min's sockets; started by hv-min as a driver domain's program
// (HV_HYPERCALL_FD set, or --domain-self) it attaches and takes its own XenStore connection
// (xenbus::backend_main). Taps and bridges live in the network namespace netback was started
// in, or the one --netns names. Thin: its own options only.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "hv/unique_fd.hpp"
#include "netback/device.hpp"
#include "netback/dpdk.hpp"
#include "xenbus/backend_main.hpp"

int main(int argc, char** argv) {
    hv::net::BackendOptions opt;
    hv::UniqueFd netns;  // outlives the backend, which borrows it
    hv::xenbus::BackendProgram p;
    p.name = "netback";
    p.serves = "vifs";
    p.synopsis =
        "usage: netback [--rundir DIR] [--domain-self] [--loop|--sink] [--max-queues N]\n"
        "               [--no-split] [--ovs-db REMOTE] [--netns NAME|PATH]\n"
        "               [--mode copy|map] [--poll-us N] [--no-persistent]\n"
        "               [--no-gso] [--no-ipv6-csum] [--no-csum-offload] [--dpdk-eal ARGS]\n"
        "  Serves the vifs of /local/domain/<self>/backend/vif until SIGTERM.\n";
    p.options =
        "  --loop            no taps: every frame a frontend sends comes back to it\n"
        "  --sink            no taps: every frame a frontend sends is taken and dropped\n"
        "  --max-queues N    multi-queue-max-queues (default: min(8, CPUs))\n"
        "  --no-split        do not offer feature-split-event-channels\n"
        "  --ovs-db REMOTE   OVSDB remote for type=ovs vifs (e.g. unix:/run/ovs/db.sock)\n"
        "  --netns NAME      create taps and find bridges in that network namespace\n"
        "                    (/run/netns/NAME, or a path): a driver domain's choice\n"
        "  --mode copy|map   how packet bytes move (default: map when trusted, else copy)\n"
        "  --poll-us N       spin window of each queue before it sleeps, in microseconds\n"
        "                    (default $HVKIT_POLL_US or 0; a vif's poll-us key overrides)\n"
        "  --no-persistent   map mode: do not offer feature-hvkit-persistent-pool\n"
        "  --no-gso          do not offer feature-gso-tcpv4/-v6 (frontends segment)\n"
        "  --no-ipv6-csum    do not offer feature-ipv6-csum-offload (nor IPv6 TSO)\n"
        "  --no-csum-offload offer no partial checksums at all (feature-no-csum-offload=1)\n"
        "  --dpdk-eal ARGS   DPDK EAL arguments (one string, split at spaces), used when\n"
        "                    the first DPDK vif (script=vif-dpdk) starts the EAL; default:\n"
        "                    -l <first CPU> --no-pci --no-huge -m 256 --no-shconf ...\n";
    p.option = [&](int n, char** args, int& i) {
        const std::string_view a = args[i];
        if (a == "--loop") {
            opt.host = hv::net::HostMode::loop;
        } else if (a == "--sink") {
            opt.host = hv::net::HostMode::sink;
        } else if (a == "--no-split") {
            opt.split_event_channels = false;
        } else if (a == "--max-queues" && i + 1 < n) {
            opt.max_queues = static_cast<unsigned>(std::strtoul(args[++i], nullptr, 10));
        } else if (a == "--ovs-db" && i + 1 < n) {
            opt.ovs_db = args[++i];
        } else if (a == "--netns" && i + 1 < n) {
            const std::string ns = args[++i];
            const std::string path = ns.find('/') == std::string::npos ? "/run/netns/" + ns : ns;
            netns = hv::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            if (!netns) {
                std::fprintf(stderr, "netback: --netns %s: %s\n", path.c_str(),
                             std::strerror(errno));
                return 1;
            }
            opt.netns_fd = netns.get();
        } else if (a == "--mode" && i + 1 < n) {
            const std::string_view m = args[++i];
            if (m != "copy" && m != "map") {
                return 2;
            }
            opt.mode = m == "map" ? hv::net::DataMode::map : hv::net::DataMode::copy;
        } else if (a == "--no-persistent") {
            opt.persistent_pool = false;
        } else if (a == "--no-gso") {
            opt.tx_offers.gso_tcpv4 = opt.tx_offers.gso_tcpv6 = false;
        } else if (a == "--no-ipv6-csum") {
            opt.tx_offers.csum6 = false;
        } else if (a == "--no-csum-offload") {
            opt.tx_offers.csum4 = opt.tx_offers.csum6 = false;
        } else if (a == "--dpdk-eal" && i + 1 < n) {
            if (auto r = hv::net::dpdk_set_eal_args(args[++i]); !r) {
                std::fprintf(stderr, "netback: --dpdk-eal: %s\n", r.error().message().c_str());
                return 1;
            }
        } else if (a == "--poll-us" && i + 1 < n) {
            opt.spin = std::chrono::microseconds(
                std::min<unsigned long>(std::strtoul(args[++i], nullptr, 10), 1000000));
        } else {
            return 2;
        }
        return 0;
    };
    p.make = [&](hv::hvmin::Services& hv, hv::xs::Client& xs, bool) {
        return hv::xenbus::upcast<hv::xenbus::BackendDriver>(hv::net::Backend::create(hv, xs, opt));
    };
    return hv::xenbus::backend_main(argc, argv, p);
}
