// hv-min daemon: `hv-min [--rundir DIR] [--spin-us N] [--cgroup DIR|none] [--foreground]`.
// A thin main around hv::hvmin::Core.
// Layer: hv-min (L1). Single thread: the core's epoll loop.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "hv/log.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"

namespace {
hv::hvmin::Core* g_core = nullptr;
}  // namespace

int main(int argc, char** argv) {
    hv::log::set_program("hv-min");
    hv::hvmin::CoreConfig cfg;
    cfg.rundir = hv::hvmin::default_rundir();
    bool foreground = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--rundir") == 0 && i + 1 < argc) {
            cfg.rundir = argv[++i];
        } else if (std::strcmp(argv[i], "--spin-us") == 0 && i + 1 < argc) {
            char* end = nullptr;
            const unsigned long us = std::strtoul(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || us > 1'000'000) {
                std::fprintf(stderr, "hv-min: --spin-us takes 0..1000000\n");
                return 2;
            }
            cfg.spin_window = std::chrono::microseconds(us);
        } else if (std::strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc) {
            cfg.cgroup = argv[++i];  // where the domains' cgroups go (CoreConfig::cgroup)
        } else if (std::strcmp(argv[i], "--foreground") == 0) {
            foreground = true;
        } else {
            std::fprintf(stderr,
                         "usage: hv-min [--rundir DIR] [--spin-us N] [--cgroup DIR|none] [--foreground]\n");
            return 2;
        }
    }
    ::signal(SIGPIPE, SIG_IGN);
    auto core = hv::hvmin::Core::create(cfg);
    if (!core) {
        std::fprintf(stderr, "hv-min: cannot start in %s: %s\n", cfg.rundir.c_str(),
                     core.error().message().c_str());
        return 1;
    }
    if (!foreground && ::daemon(1, 1) != 0) {
        std::perror("hv-min: daemon");
        return 1;
    }
    g_core = core->get();
    // SIGTERM/SIGINT: stop the loop; the Core's destructor then kills and reaps every domain.
    struct sigaction sa {};
    // Core::stop() from the handler is an atomic store and one write(2) (no thread to join:
    // the loop runs in this thread).
    sa.sa_handler = [](int) {
        if (g_core != nullptr) {
            g_core->stop();
        }
    };
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    HV_INFO("hv-min: serving %s", (*core)->socket_path().c_str());
    auto r = (*core)->run();
    core->reset();
    if (!r) {
        std::fprintf(stderr, "hv-min: %s\n", r.error().message().c_str());
        return 1;
    }
    return 0;
}
