// Harness of the tools system tests: a real hv-min daemon in a private rundir, hvctl runs
// as child processes, and the status FIFO hvdemo-domain reports to. Every wait is bounded.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.hpp"
#include "text_match.hpp"
#include "xenstore/client.hpp"

namespace hv::test::tools {

inline const std::string bin_dir = HV_BIN_DIR;
inline const std::string source_dir = HV_SOURCE_DIR;

struct ProcResult {
    int rc = -1;  // exit code, or 128 + signal
    std::string out;
    std::string err;
};

/// Runs argv with stdout/stderr captured; kills it after `timeout`.
inline ProcResult run_process(const std::vector<std::string>& argv,
                              std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    int out_pipe[2];
    int err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
        return {};
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(out_pipe[1], 1);
        ::dup2(err_pipe[1], 2);
        std::vector<char*> args;
        for (const auto& a : argv) {
            args.push_back(const_cast<char*>(a.c_str()));
        }
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    ProcResult r;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    int open_fds = 2;
    bool killed = false;
    while (open_fds > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 && !killed) {
            ::kill(pid, SIGKILL);
            killed = true;
        }
        const int n = ::poll(fds, 2, killed ? 1000 : static_cast<int>(left.count()));
        if (n <= 0) {
            if (killed) {
                break;
            }
            continue;
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP)) != 0) {
                char buf[4096];
                const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
                if (got <= 0) {
                    ::close(fds[i].fd);
                    fds[i].fd = -1;
                    --open_fds;
                } else {
                    (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(got));
                }
            }
        }
    }
    for (auto& f : fds) {
        if (f.fd >= 0) {
            ::close(f.fd);
        }
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

/// A XenStore node's value, or "<error message>" (for CHECKs that print what was there).
inline std::string rd(hv::xs::Client& xs, const std::string& path) {
    auto v = xs.read(path);
    return v ? *v : "<" + v.error().message() + ">";
}

/// A node's permissions as "n0 r3", or "error: ...".
inline std::string perms_text(hv::xs::Client& xs, const std::string& path) {
    auto p = xs.get_perms(path);
    if (!p) {
        return "error: " + p.error().message();
    }
    std::string s;
    for (const auto& e : *p) {
        s += (s.empty() ? "" : " ") + hv::xs::to_string(e);
    }
    return s;
}

/// The domain id in hvctl create's "Created domain NAME (id N)", or -1.
inline int created_id(const std::string& out) {
    hv::test::Groups m;
    if (hv::test::re_search(out, R"(Created domain \S+ \(id (\d+)\))", &m)) {
        return std::stoi(m[1]);
    }
    return -1;
}

inline std::size_t fd_count(pid_t pid) {
    std::size_t n = 0;
    const std::string path = "/proc/" + std::to_string(pid) + "/fd";
    if (DIR* d = ::opendir(path.c_str())) {
        while (const dirent* e = ::readdir(d)) {
            n += e->d_name[0] != '.';
        }
        ::closedir(d);
    }
    return n;
}

/// hv-min's fd count once it has stayed the same for 100 ms (bounded by 5 s): hvctl's
/// connections close asynchronously, so a single reading right after one may still see it.
inline std::size_t settled_fd_count(pid_t pid) {
    std::size_t last = fd_count(pid);
    int same = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (same < 20 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const std::size_t now = fd_count(pid);
        same = now == last ? same + 1 : 0;
        last = now;
    }
    return last;
}

inline std::set<std::string> dir_entries(const std::string& path) {
    std::set<std::string> names;
    if (DIR* d = ::opendir(path.c_str())) {
        while (const dirent* e = ::readdir(d)) {
            if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
                names.insert(e->d_name);
            }
        }
        ::closedir(d);
    }
    return names;
}

/// Waits (bounded, 5 ms steps) until `done()`; the conditions polled here (a reaped process
/// vanishing from /proc, an fd count settling) have no notification to wait on.
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

/// hv-min in a private rundir, plus a status FIFO for hvdemo-domain reports.
class Daemon {
public:
    Daemon() : dir_("hvkit-tools-sys") {
        rundir_ = dir_.str() + "/run";
        status_ = dir_.str() + "/status";
        ::mkfifo(status_.c_str(), 0600);
        status_fd_ = ::open(status_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
        const std::string log = dir_.str() + "/hv-min.log";
        // The watchers `hvctl create` leaves behind log into this test's own directory.
        ::setenv("HVCTL_LOG_DIR", log_dir().c_str(), 1);
        pid_ = ::fork();
        if (pid_ == 0) {
            const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            const std::string prog = bin_dir + "/hv-min";
            ::execl(prog.c_str(), prog.c_str(), "--rundir", rundir_.c_str(), "--foreground",
                    static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ready_ = eventually([&] { return hvctl({"list"}).rc == 0 || !alive(); },
                            std::chrono::seconds(10)) &&
                 alive();
    }
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;
    ~Daemon() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGTERM);
            if (!eventually([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; },
                            std::chrono::seconds(10))) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, nullptr, 0);
            }
        }
        if (status_fd_ >= 0) {
            ::close(status_fd_);
        }
    }

    bool ready() const { return ready_; }
    bool alive() {
        if (reaped_ || pid_ <= 0) {
            return false;
        }
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
            reaped_ = true;
        }
        return !reaped_;
    }
    pid_t pid() const { return pid_; }
    const std::string& rundir() const { return rundir_; }
    /// Where the domains' watchers log (hvctl-NAME.log).
    std::string log_dir() const { return dir_.str() + "/log"; }
    /// The watcher log of domain `name` ("" while there is none).
    std::string watcher_log(const std::string& name) const {
        std::ifstream f(log_dir() + "/hvctl-" + name + ".log");
        return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    const std::string& status_fifo() const { return status_; }
    std::string dir() const { return dir_.str(); }
    std::string log() const {
        auto r = run_process({"/bin/cat", dir_.str() + "/hv-min.log"});
        return r.out;
    }

    ProcResult hvctl(std::vector<std::string> args) const {
        args.insert(args.begin(), {bin_dir + "/hvctl", "--rundir", rundir_});
        return run_process(args);
    }

    /// Writes a domain file into the private dir and returns its path.
    std::string write_cfg(const std::string& file, const std::string& text) const {
        const std::string path = dir_.str() + "/" + file;
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        (void)!::write(fd, text.data(), text.size());
        ::close(fd);
        return path;
    }

    /// One line a domain reported on the status FIFO, or "" after `timeout`.
    std::string status_line(std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto nl = pending_.find('\n');
            if (nl != std::string::npos) {
                std::string line = pending_.substr(0, nl);
                pending_.erase(0, nl + 1);
                return line;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return {};
            }
            pollfd p{status_fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
                char buf[512];
                const ssize_t n = ::read(status_fd_, buf, sizeof buf);
                if (n > 0) {
                    pending_.append(buf, static_cast<std::size_t>(n));
                }
            }
        }
    }

private:
    TempDir dir_;
    std::string rundir_;
    std::string status_;
    int status_fd_ = -1;
    pid_t pid_ = -1;
    bool ready_ = false;
    bool reaped_ = false;
    std::string pending_;
};

/// The pid of domain `name` from `hvctl list -l NAME`, -1 when it is not listed.
inline pid_t domain_pid(const Daemon& d, const std::string& name) {
    const ProcResult r = d.hvctl({"list", "-l", name});
    hv::test::Groups m;
    if (r.rc == 0 && hv::test::re_search(r.out, R"("pid": (\d+))", &m)) {
        return static_cast<pid_t>(std::stol(m[1]));
    }
    return -1;
}

}  // namespace hv::test::tools
