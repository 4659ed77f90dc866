// The shared main() of the backend programs. See backend_main.hpp.
#include "xenbus/backend_main.hpp"

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "hv/log.hpp"
#include "hv/unique_fd.hpp"

namespace hv::xenbus {
namespace {

void usage(std::FILE* f, const BackendProgram& p) {
    std::fprintf(f,
                 "%s"
                 "  --rundir DIR     hv-min's run directory (default $HV_RUNDIR or /run/hvkit)\n"
                 "  --domain-self    run as the domain hv-min started (HV_HYPERCALL_FD)\n"
                 "%s",
                 p.synopsis, p.options);
}

/// The domain's own XenStore connection (driver domain), or dom0's socket in `rundir`.
Result<std::unique_ptr<xs::Client>> connect_xenstore(hvmin::Services& svc, bool domain_self,
                                                     const std::filesystem::path& rundir,
                                                     const char* name) {
    if (!domain_self) {
        return xs::Client::connect((rundir / "xenstored.sock").string());
    }
    UniqueFd fd = svc.take_xenstore_fd();
    if (fd.get() < 0) {
        std::fprintf(stderr, "%s: this domain has no XenStore connection\n", name);
        return fail_errno(ENOENT);
    }
    return xs::Client::from_fd(std::move(fd));
}

}  // namespace

int backend_main(int argc, char** argv, const BackendProgram& p) {
    log::set_program(p.name);
    std::filesystem::path rundir = hvmin::default_rundir();
    bool domain_self = std::getenv("HV_HYPERCALL_FD") != nullptr;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--rundir" && i + 1 < argc) {
            rundir = argv[++i];
        } else if (a == "--domain-self") {
            domain_self = true;
        } else if (a == "-h" || a == "--help") {
            usage(stdout, p);
            return 0;
        } else if (const int rc = p.option ? p.option(argc, argv, i) : 2; rc != 0) {
            if (rc == 2) {
                usage(stderr, p);
            }
            return rc;
        }
    }

    // Block the stop signals before any thread starts, so only sigwait() sees them.
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);

    auto svc = domain_self ? hvmin::attach() : hvmin::connect_dom0(rundir);
    if (!svc) {
        std::fprintf(stderr, "%s: %s: %s\n", p.name, domain_self ? "attach" : "connect to hv-min",
                     svc.error().message().c_str());
        return 1;
    }
    auto xs = connect_xenstore(*svc, domain_self, rundir, p.name);
    if (!xs) {
        std::fprintf(stderr, "%s: XenStore: %s\n", p.name, xs.error().message().c_str());
        return 1;
    }
    auto backend = p.make(*svc, **xs, domain_self);
    if (!backend) {
        std::fprintf(stderr, "%s: %s\n", p.name, backend.error().message().c_str());
        return 1;
    }
    HV_INFO("%s: serving domain %u's %s", p.name, svc->domid().get(), p.serves);
    (*backend)->start();
    int sig = 0;
    sigwait(&stop_set, &sig);
    HV_INFO("%s: signal %d: disconnecting every device", p.name, sig);
    (*backend)->stop();
    backend->reset();  // before the connections it uses go
    return 0;
}

}  // namespace hv::xenbus
