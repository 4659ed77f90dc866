// NetNs implementation: unshare on a helper thread, bind-mount its ns file under /run/netns.
#include "netns.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

namespace hv::test {
namespace {

constexpr const char* run_dir = "/run/netns";

/// /run/netns must be a shared mount so bind mounts made here are seen by `ip netns` in other
/// mount namespaces; this mirrors what iproute2 does on its first `ip netns add`.
hv::Result<void> prepare_run_dir() noexcept {
    if (::mkdir(run_dir, 0755) != 0 && errno != EEXIST) {
        return hv::fail_errno();
    }
    if (::mount("", run_dir, "none", MS_SHARED | MS_REC, nullptr) == 0) {
        return {};
    }
    if (errno != EINVAL) {
        return hv::fail_errno();
    }
    if (::mount(run_dir, run_dir, "none", MS_BIND | MS_REC, nullptr) != 0) {
        return hv::fail_errno();
    }
    if (::mount("", run_dir, "none", MS_SHARED | MS_REC, nullptr) != 0) {
        return hv::fail_errno();
    }
    return {};
}

void remove_binding(const std::string& path) noexcept {
    ::umount2(path.c_str(), MNT_DETACH);
    ::unlink(path.c_str());
}

/// Removes "<prefix>-<pid>-<n>" entries whose creating process is gone (a crashed test run).
void sweep_stale(std::string_view prefix) noexcept {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(run_dir, ec)) {
        const std::string n = e.path().filename().string();
        if (n.size() <= prefix.size() + 1 || n.compare(0, prefix.size(), prefix) != 0 ||
            n[prefix.size()] != '-') {
            continue;
        }
        const long pid = std::strtol(n.c_str() + prefix.size() + 1, nullptr, 10);
        if (pid <= 0 || pid == ::getpid()) {
            continue;
        }
        if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
            remove_binding(e.path().string());
        }
    }
}

std::atomic<unsigned> counter{0};

}  // namespace

void NetNs::enter_or_abort(int nsfd) noexcept {
    if (::setns(nsfd, CLONE_NEWNET) != 0) {
        std::perror("NetNs: setns");
        std::abort();
    }
}

hv::Result<NetNs> NetNs::create(std::string_view prefix) noexcept {
    HV_TRY(prepare_run_dir());
    sweep_stale(prefix);
    std::string name = std::string(prefix) + "-" + std::to_string(::getpid()) + "-" +
                       std::to_string(counter.fetch_add(1));
    const std::string path = std::string(run_dir) + "/" + name;
    {
        hv::UniqueFd f(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
        if (!f) {
            return hv::fail_errno();
        }
    }
    // unshare() only moves the calling thread; do it on a throwaway thread so the caller's
    // namespace is never changed, and bind its new namespace to the file to keep it alive.
    int err = 0;
    std::thread t([&] {
        if (::unshare(CLONE_NEWNET) != 0) {
            err = errno;
            return;
        }
        const std::string self = "/proc/thread-self/ns/net";
        if (::mount(self.c_str(), path.c_str(), "none", MS_BIND, nullptr) != 0) {
            err = errno;
            return;
        }
        // Loopback up, so tests may also use 127.0.0.1 inside the namespace.
        hv::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        ifreq ifr{};
        std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
        if (!s || ::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) {
            err = errno;
            return;
        }
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
        if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) {
            err = errno;
        }
    });
    t.join();
    if (err != 0) {
        remove_binding(path);
        return hv::fail_errno(err);
    }
    hv::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        const auto ec = hv::errno_code();
        remove_binding(path);
        return hv::fail(ec);
    }
    return NetNs(std::move(name), std::move(fd));
}

NetNs::~NetNs() {
    if (!name_.empty()) {
        remove_binding(std::string(run_dir) + "/" + name_);
    }
}

hv::Result<hv::RunResult> NetNs::exec(const std::vector<std::string>& argv,
                                      int timeout_ms) const noexcept {
    hv::SpawnOptions opt;
    opt.netns_fd = fd_.get();
    return hv::run(argv, timeout_ms, opt);
}

}  // namespace hv::test
