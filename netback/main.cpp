// The `netback` program: serves every vif whose backend is this domain until SIGTERM/SIGINT.
// As dom0 it connects to hv-min's sockets; started by hv-min as a driver domain's program
// (HV_HYPERCALL_FD set, or --domain-self) it attaches and takes its own XenStore connection.
// Taps and bridges live in the network namespace netback was started in. Thin: wiring only.
#include <fcntl.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "hv/log.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "netback/device.hpp"
#include "xenstore/client.hpp"

namespace {

void usage(std::FILE* f) {
    std::fprintf(f,
                 "usage: netback [--rundir DIR] [--domain-self] [--loop] [--max-queues N]\n"
                 "               [--no-split] [--ovs-db REMOTE] [--netns NAME|PATH]\n"
                 "               [--mode copy|map] [--poll-us N]\n"
                 "  Serves the vifs of /local/domain/<self>/backend/vif until SIGTERM.\n"
                 "  --rundir DIR      hv-min's run directory (default $HV_RUNDIR or /run/hvkit)\n"
                 "  --domain-self     run as the domain hv-min started (HV_HYPERCALL_FD)\n"
                 "  --loop            no taps: every frame a frontend sends comes back to it\n"
                 "  --max-queues N    multi-queue-max-queues (default: min(8, CPUs))\n"
                 "  --no-split        do not offer feature-split-event-channels\n"
                 "  --ovs-db REMOTE   OVSDB remote for type=ovs vifs (e.g. unix:/run/ovs/db.sock)\n"
                 "  --netns NAME      create taps and find bridges in that network namespace\n"
                 "                    (/run/netns/NAME, or a path): a driver domain's choice\n"
                 "  --mode copy|map   how packet bytes move (default: map when trusted, else copy)\n"
                 "  --poll-us N       spin window of each queue before it sleeps, in microseconds\n"
                 "                    (default $HVKIT_POLL_US or 0; a vif's poll-us key overrides)\n");
}

int run(int argc, char** argv) {
    std::filesystem::path rundir = hv::hvmin::default_rundir();
    bool domain_self = std::getenv("HV_HYPERCALL_FD") != nullptr;
    hv::net::BackendOptions opt;
    hv::UniqueFd netns;  // outlives the backend, which borrows it
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--rundir" && i + 1 < argc) {
            rundir = argv[++i];
        } else if (a == "--domain-self") {
            domain_self = true;
        } else if (a == "--loop") {
            opt.host = hv::net::HostMode::loop;
        } else if (a == "--no-split") {
            opt.split_event_channels = false;
        } else if (a == "--max-queues" && i + 1 < argc) {
            opt.max_queues = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
        } else if (a == "--ovs-db" && i + 1 < argc) {
            opt.ovs_db = argv[++i];
        } else if (a == "--netns" && i + 1 < argc) {
            const std::string ns = argv[++i];
            const std::string path = ns.find('/') == std::string::npos ? "/run/netns/" + ns : ns;
            netns = hv::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            if (!netns) {
                std::fprintf(stderr, "netback: --netns %s: %s\n", path.c_str(),
                             std::strerror(errno));
                return 1;
            }
            opt.netns_fd = netns.get();
        } else if (a == "--mode" && i + 1 < argc) {
            const std::string_view m = argv[++i];
            if (m != "copy" && m != "map") {
                usage(stderr);
                return 2;
            }
            opt.mode = m == "map" ? hv::net::DataMode::map : hv::net::DataMode::copy;
        } else if (a == "--poll-us" && i + 1 < argc) {
            opt.spin = std::chrono::microseconds(
                std::min<unsigned long>(std::strtoul(argv[++i], nullptr, 10), 1000000));
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
        std::fprintf(stderr, "netback: %s: %s\n", domain_self ? "attach" : "connect to hv-min",
                     svc.error().message().c_str());
        return 1;
    }
    hv::Result<std::unique_ptr<hv::xs::Client>> xs = hv::fail_errno(ENOENT);
    if (domain_self) {
        hv::UniqueFd fd = svc->take_xenstore_fd();
        if (fd.get() < 0) {
            std::fprintf(stderr, "netback: this domain has no XenStore connection\n");
            return 1;
        }
        xs = hv::xs::Client::from_fd(std::move(fd));
    } else {
        xs = hv::xs::Client::connect((rundir / "xenstored.sock").string());
    }
    if (!xs) {
        std::fprintf(stderr, "netback: XenStore: %s\n", xs.error().message().c_str());
        return 1;
    }
    auto backend = hv::net::Backend::create(*svc, **xs, opt);
    if (!backend) {
        std::fprintf(stderr, "netback: %s\n", backend.error().message().c_str());
        return 1;
    }
    HV_INFO("netback: serving domain %u's vifs", svc->domid().get());
    (*backend)->start();
    int sig = 0;
    sigwait(&stop_set, &sig);
    HV_INFO("netback: signal %d: disconnecting every vif", sig);
    (*backend)->stop();
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
