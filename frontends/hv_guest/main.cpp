// hv-guest: the standard domain program (design §9). Attaches to hv-min, connects the
// domain's devices (disks → NBD exports on Unix sockets), then runs the configured command
// and exits with its status. Thin: argument parsing, the poll loop, the child.
// Layer: frontends (program). Single-threaded.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "fuse_file.hpp"
#include "guest.hpp"
#include "hv/log.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

extern char** environ;

namespace {

void usage(std::FILE* f) {
    std::fprintf(
        f,
        "usage: hv-guest [--nbd-dir DIR] [--fuse-dir DIR] [--pci-sysfs DIR] [--wait-disks N]\n"
        "                [--wait-pci N] [--connect-timeout MS] [-- COMMAND ARGS...]\n"
        "  The standard domain program: run by hv-min as a domain (needs HV_HYPERCALL_FD).\n"
        "  Each disk (device/vbd/*) is exported over NBD on DIR/<dev>.nbd (dev = the backend's\n"
        "  `dev` key, e.g. xvda, or the devid); DIR defaults to $HV_RUNDIR/guest/<domid>.\n"
        "  Disks attached later are exported when they connect; removed ones are unexported.\n"
        "  COMMAND starts once the disks present at start, and at least N disks, are connected\n"
        "  (or after MS ms, default 30000) with HV_NBD_DIR, HV_NBD_<DEV>=<socket> and\n"
        "  HV_NBD_URI_<DEV>=nbd+unix:///?socket=<socket> in its environment; hv-guest exits\n"
        "  with its status. Without COMMAND it serves until SIGTERM/SIGINT.\n"
        "  --fuse-dir: the command runs in a mount namespace of the domain, where each disk is also\n"
        "  the file DIR/<dev> (FUSE; HV_DISK_<DEV>=<file> in the environment).\n"
        "  The PCI bus (device/pci/0) is connected with pcifront; --pci-sysfs: the command runs in\n"
        "  the domain's mount namespace, where DIR is shaped like /sys/bus/pci (HV_PCI_SYSFS=DIR):\n"
        "  lspci -A linux-sysfs -O sysfs.path=DIR. --wait-pci N: COMMAND also waits for the bus to be\n"
        "  connected with at least N devices (the toolstack may write it after the domain started).\n");
}

struct Child {
    pid_t pid = -1;
    hv::UniqueFd pidfd;
};

hv::Result<Child> spawn_child(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env) {
    std::vector<std::string> env_store;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string_view s(*e);
        if (s.rfind("HV_HYPERCALL_FD=", 0) == 0) {
            continue;  // the domain's hypercall channel is not the command's
        }
        env_store.emplace_back(s);
    }
    for (const auto& e : extra_env) {
        env_store.push_back(e);
    }
    std::vector<char*> envp;
    for (auto& e : env_store) {
        envp.push_back(e.data());
    }
    envp.push_back(nullptr);
    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    pid_t pid = -1;
    const int rc = ::posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        return hv::fail_errno(rc);
    }
    Child c;
    c.pid = pid;
    c.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (c.pidfd.get() < 0) {
        return hv::fail_errno();
    }
    return c;
}

int run(int argc, char** argv) {
    hv::log::set_program("hv-guest");
    std::string nbd_dir;
    std::string fuse_dir;
    std::string pci_sysfs;
    int connect_timeout_ms = 30000;
    unsigned wait_disks = 0;
    unsigned wait_pci = 0;
    std::vector<std::string> command;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--") {
            for (int j = i + 1; j < argc; ++j) {
                command.emplace_back(argv[j]);
            }
            break;
        }
        if (a == "--nbd-dir" && i + 1 < argc) {
            nbd_dir = argv[++i];
        } else if (a == "--fuse-dir" && i + 1 < argc) {
            fuse_dir = argv[++i];
        } else if (a == "--pci-sysfs" && i + 1 < argc) {
            pci_sysfs = argv[++i];
        } else if (a == "--wait-disks" && i + 1 < argc) {
            wait_disks = static_cast<unsigned>(std::atoi(argv[++i]));
        } else if (a == "--wait-pci" && i + 1 < argc) {
            wait_pci = static_cast<unsigned>(std::atoi(argv[++i]));
        } else if (a == "--connect-timeout" && i + 1 < argc) {
            connect_timeout_ms = std::atoi(argv[++i]);
        } else if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
    hv::UniqueFd sigfd(::signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK));

    std::unique_ptr<hv::guest::MountNamespace> mount_ns;  // forked before any thread exists
    if (!fuse_dir.empty() || !pci_sysfs.empty()) {
        auto m = hv::guest::MountNamespace::create();
        if (!m) {
            std::fprintf(stderr, "hv-guest: mount namespace: %s\n", m.error().message().c_str());
            return 1;
        }
        mount_ns = std::move(*m);
        if (!command.empty()) {  // the command runs in it
            command.insert(command.begin(), {"/usr/bin/nsenter", "--mount=" + mount_ns->ns_file(), "--"});
        }
    }
    auto svc = hv::hvmin::attach();
    if (!svc) {
        std::fprintf(stderr, "hv-guest: attach: %s\n", svc.error().message().c_str());
        return 1;
    }
    hv::UniqueFd xfd = svc->take_xenstore_fd();
    if (xfd.get() < 0) {
        std::fprintf(stderr, "hv-guest: this domain has no XenStore connection\n");
        return 1;
    }
    auto xs = hv::xs::Client::from_fd(std::move(xfd));
    if (!xs) {
        std::fprintf(stderr, "hv-guest: XenStore: %s\n", xs.error().message().c_str());
        return 1;
    }
    const hv::DomId domid = svc->domid();
    std::filesystem::path dir = nbd_dir.empty()
                                    ? hv::hvmin::default_rundir() / "guest" / std::to_string(domid.value)
                                    : std::filesystem::path(nbd_dir);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
        std::fprintf(stderr, "hv-guest: %s: %s\n", dir.c_str(), ec.message().c_str());
        return 1;
    }
    hv::guest::Context ctx{*svc, **xs, domid, hv::xenbus::domain_path(domid), dir,
                              wait_disks, fuse_dir, mount_ns.get(), pci_sysfs, wait_pci};
    std::vector<std::unique_ptr<hv::guest::DeviceKind>> kinds;
    kinds.push_back(hv::guest::make_disks(ctx));
    kinds.push_back(hv::guest::make_nics(ctx));
    kinds.push_back(hv::guest::make_pci(ctx));
    for (auto& k : kinds) {
        auto r = k->start();
        if (!r) {
            std::fprintf(stderr, "hv-guest: %s: %s\n", k->name(), r.error().message().c_str());
            return 1;
        }
    }

    const auto start_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(connect_timeout_ms);
    Child child;
    bool started = command.empty();
    int exit_status = 0;
    for (;;) {
        if (!started) {
            bool ready = true;
            for (auto& k : kinds) {
                ready = ready && k->ready();
            }
            if (ready || std::chrono::steady_clock::now() >= start_deadline) {
                if (!ready) {
                    HV_WARN("hv-guest: devices not connected after %d ms; starting anyway", connect_timeout_ms);
                }
                std::vector<std::string> env;
                for (auto& k : kinds) {
                    k->env(env);
                }
                auto c = spawn_child(command, env);
                if (!c) {
                    std::fprintf(stderr, "hv-guest: %s: %s\n", command[0].c_str(), c.error().message().c_str());
                    return 127;
                }
                child = std::move(*c);
                started = true;
            }
        }
        std::vector<pollfd> fds;
        fds.push_back(pollfd{sigfd.get(), POLLIN, 0});
        fds.push_back(pollfd{(*xs)->watch_fd(), POLLIN, 0});
        if (child.pidfd) {
            fds.push_back(pollfd{child.pidfd.get(), POLLIN, 0});
        }
        const std::size_t fixed = fds.size();
        for (auto& k : kinds) {
            k->poll_fds(fds);
        }
        const int n = ::poll(fds.data(), fds.size(), started ? 1000 : 100);
        if (n < 0 && errno != EINTR) {
            std::fprintf(stderr, "hv-guest: poll: %s\n", std::strerror(errno));
            return 1;
        }
        if (!(*xs)->connected()) {
            std::fprintf(stderr, "hv-guest: XenStore connection lost\n");
            return 1;
        }
        if ((fds[0].revents & POLLIN) != 0) {
            signalfd_siginfo si{};
            while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                    if (child.pid > 0) {
                        ::kill(child.pid, static_cast<int>(si.ssi_signo));
                    } else {
                        return 0;
                    }
                }
            }
        }
        while (auto ev = (*xs)->next_event()) {
            for (auto& k : kinds) {
                if (k->on_watch(*ev)) {
                    break;
                }
            }
        }
        const std::span<const pollfd> rest(fds.data() + fixed, fds.size() - fixed);
        for (auto& k : kinds) {
            k->handle(rest);
        }
        if (child.pidfd && (fds[2].revents & POLLIN) != 0) {
            int st = 0;
            if (::waitpid(child.pid, &st, 0) == child.pid) {
                exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                HV_INFO("hv-guest: command exited with status %d", exit_status);
                return exit_status;
            }
        }
    }
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
