// Acting as a domain in the system tests: a domain's process is stopped and its own hypercall
// channel or XenStore connection is copied into the test (pidfd_getfd; root), so a probe
// meets exactly the checks that domain meets. Every wait is bounded.
#pragma once

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "hv/unique_fd.hpp"
#include "hvmin/toolstack.hpp"
#include "tools_harness.hpp"

namespace hv::test::tools {

inline std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

/// A copy of fd `fd` of process `pid` (pidfd_getfd; root). Invalid on failure (errno set).
inline hv::UniqueFd steal_fd(pid_t pid, int fd) {
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
        return hv::UniqueFd();
    }
    hv::UniqueFd out(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)));
    ::close(pidfd);
    return out;
}

/// The one SOCK_STREAM socket of a (stopped) domain process: its XenStore connection (its
/// hypercall channels are SOCK_SEQPACKET).
inline hv::UniqueFd steal_xenstore_fd(pid_t pid) {
    hv::UniqueFd found;
    int count = 0;
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd/";
    for (const std::string& n : dir_entries(dir)) {
        char target[64] = {};
        if (::readlink((dir + n).c_str(), target, sizeof target - 1) <= 0 ||
            std::string(target).rfind("socket:", 0) != 0) {
            continue;
        }
        hv::UniqueFd fd = steal_fd(pid, std::atoi(n.c_str()));
        int type = 0;
        socklen_t len = sizeof type;
        if (fd && ::getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
            type == SOCK_STREAM) {
            found = std::move(fd);
            ++count;
        }
    }
    return count == 1 ? std::move(found) : hv::UniqueFd();
}

/// SIGSTOPs a process for a scope (once it is seen stopped), so that what it shares with us
/// (its sockets) is ours alone, or so that it does not answer.
class Stopped {
public:
    explicit Stopped(pid_t pid) : pid_(pid) {
        ::kill(pid_, SIGSTOP);
        eventually([&] {
            const std::string st = read_text("/proc/" + std::to_string(pid_) + "/stat");
            const auto p = st.rfind(')');
            return p != std::string::npos && p + 2 < st.size() && st[p + 2] == 'T';
        });
    }
    ~Stopped() { ::kill(pid_, SIGCONT); }
    Stopped(const Stopped&) = delete;
    Stopped& operator=(const Stopped&) = delete;

private:
    pid_t pid_;
};

struct Dom {
    int id = -1;
    pid_t pid = -1;
};

/// The domain named `name` as hv-min lists it; id -1 when there is none.
inline Dom find_domain(const std::string& rundir, const std::string& name) {
    auto ts = hv::hvmin::Toolstack::connect(rundir);
    if (!ts) {
        return {};
    }
    auto l = ts->list();
    if (l) {
        for (const auto& s : *l) {
            if (s.name == name) {
                return {s.domid.get(), s.pid};
            }
        }
    }
    return {};
}

}  // namespace hv::test::tools
