// Subprocess: fork+exec a program (optionally inside a network namespace) and wait for it with a
// bounded timeout; the RAII owner ends the child by its pid. Layer: common, control path only.
// Header-only. Spawn from a long-lived thread: the child gets PR_SET_PDEATHSIG(SIGKILL), which
// fires when the *spawning thread* exits, so a daemon never outlives the test that started it.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

extern char** environ;

namespace hv {

struct SpawnOptions {
    /// The child joins this network namespace (setns) before exec; -1 keeps the caller's.
    int netns_fd = -1;
    /// Extra NAME=VALUE entries appended to (and overriding) the inherited environment.
    std::vector<std::string> env;
    /// true: stdout+stderr go to a pipe that wait()/run() collect into output();
    /// false: to `log_path` (appended) or /dev/null when it is empty.
    bool capture_output = true;
    std::string log_path;
};

/// Exit status of a finished child: exit code, or 128+signal when it was killed.
inline int decode_wait_status(int status) noexcept {
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return -1;
}

class Subprocess {
public:
    Subprocess() noexcept = default;
    Subprocess(Subprocess&& o) noexcept
        : pid_(std::exchange(o.pid_, -1)),
          pidfd_(std::move(o.pidfd_)),
          out_(std::move(o.out_)),
          output_(std::move(o.output_)),
          exit_(o.exit_) {}
    Subprocess& operator=(Subprocess&& o) noexcept {
        if (this != &o) {
            terminate();
            pid_ = std::exchange(o.pid_, -1);
            pidfd_ = std::move(o.pidfd_);
            out_ = std::move(o.out_);
            output_ = std::move(o.output_);
            exit_ = o.exit_;
        }
        return *this;
    }
    Subprocess(const Subprocess&) = delete;
    Subprocess& operator=(const Subprocess&) = delete;
    /// Ends a still-running child: SIGTERM, up to 2 s grace, then SIGKILL; always reaped.
    ~Subprocess() { terminate(); }

    /// argv[0] is looked up in PATH when it has no '/'. Errors: ENOENT (not found), fork/pipe errno.
    static Result<Subprocess> spawn(const std::vector<std::string>& argv,
                                    const SpawnOptions& opt = {}) noexcept {
        if (argv.empty()) {
            return fail_errno(EINVAL);
        }
        std::string path = resolve(argv[0]);
        if (path.empty()) {
            return fail_errno(ENOENT);
        }
        std::vector<char*> args;
        for (const auto& a : argv) {
            args.push_back(const_cast<char*>(a.c_str()));
        }
        args.push_back(nullptr);
        std::vector<std::string> env_store = merged_env(opt.env);
        std::vector<char*> envp;
        for (auto& e : env_store) {
            envp.push_back(e.data());
        }
        envp.push_back(nullptr);

        int pipefd[2] = {-1, -1};
        UniqueFd out_r;
        UniqueFd out_w;
        if (opt.capture_output) {
            if (::pipe2(pipefd, O_CLOEXEC) != 0) {
                return fail_errno();
            }
            out_r.reset(pipefd[0]);
            out_w.reset(pipefd[1]);
        } else {
            const char* target = opt.log_path.empty() ? "/dev/null" : opt.log_path.c_str();
            out_w.reset(::open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
            if (!out_w) {
                return fail_errno();
            }
        }
        UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!devnull) {
            return fail_errno();
        }
        const pid_t parent = ::getpid();
        // Block every signal across fork so that the child cannot run one of the parent's
        // handlers (a test framework's, say) before it has reset them (as posix_spawn does).
        sigset_t all;
        sigset_t old;
        ::sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &old);
        const pid_t pid = ::fork();
        if (pid != 0) {
            ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
        }
        if (pid < 0) {
            return fail_errno();
        }
        if (pid == 0) {
            // Child: only async-signal-safe calls from here to execve.
            struct sigaction dfl {};
            dfl.sa_handler = SIG_DFL;
            for (int sig = 1; sig < NSIG; ++sig) {
                if (sig != SIGKILL && sig != SIGSTOP) {
                    ::sigaction(sig, &dfl, nullptr);
                }
            }
            ::sigprocmask(SIG_SETMASK, &old, nullptr);
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) {
                ::_exit(127);
            }
            if (opt.netns_fd >= 0 && ::setns(opt.netns_fd, CLONE_NEWNET) != 0) {
                ::_exit(126);
            }
            ::dup2(devnull.get(), 0);
            ::dup2(out_w.get(), 1);
            ::dup2(out_w.get(), 2);
            // Never leak the parent's fds (taps, netlink sockets) into a long-lived daemon.
            ::syscall(SYS_close_range, 3U, ~0U, 0U);
            ::execve(path.c_str(), args.data(), envp.data());
            ::_exit(127);
        }
        Subprocess p;
        p.pid_ = pid;
        p.pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
        p.out_ = std::move(out_r);
        if (!p.pidfd_) {
            const auto ec = errno_code();
            p.terminate();
            return fail(ec);
        }
        return p;
    }

    pid_t pid() const noexcept { return pid_; }
    bool running() const noexcept { return pid_ > 0; }
    /// Everything the child wrote so far (capture_output only).
    const std::string& output() const noexcept { return output_; }

    /// Waits up to timeout_ms for the child to exit, collecting its output meanwhile.
    /// Returns its exit status (decode_wait_status); std::errc::timed_out leaves it running.
    Result<int> wait(int timeout_ms) noexcept {
        if (pid_ <= 0) {
            return exit_;
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return fail(std::make_error_code(std::errc::timed_out));
            }
            if (poll_once(static_cast<int>(left.count()))) {
                return exit_;
            }
        }
    }

    /// Waits up to timeout_ms until the captured output contains `needle` (a readiness line).
    /// Errors: timed_out; ECHILD if the child exited without printing it.
    Result<void> wait_for_output(std::string_view needle, int timeout_ms) noexcept {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            if (output_.find(needle) != std::string::npos) {
                return {};
            }
            if (pid_ <= 0) {
                return fail_errno(ECHILD);
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return fail(std::make_error_code(std::errc::timed_out));
            }
            poll_once(static_cast<int>(left.count()));
        }
    }

    /// Sends `sig` to the child by its pid (never to a group or a name).
    void signal(int sig) const noexcept {
        if (pid_ > 0) {
            ::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0U);
        }
    }

    /// SIGTERM, then SIGKILL after grace_ms; reaps. Idempotent.
    void terminate(int grace_ms = 2000) noexcept {
        if (pid_ <= 0) {
            return;
        }
        signal(SIGTERM);
        if (!wait(grace_ms)) {
            signal(SIGKILL);
            reap();
        }
    }

private:
    /// One poll on {pidfd, output pipe}: collects output; reaps and returns true on exit.
    bool poll_once(int timeout_ms) noexcept {
        pollfd fds[2] = {{pidfd_.get(), POLLIN, 0}, {out_.get(), POLLIN, 0}};
        const nfds_t n = out_ ? 2 : 1;
        ::poll(fds, n, timeout_ms);  // EINTR: the caller's loop re-polls
        if (n == 2 && (fds[1].revents & (POLLIN | POLLHUP)) != 0) {
            drain();
        }
        if ((fds[0].revents & POLLIN) != 0) {
            reap();
            drain();
            return true;
        }
        return false;
    }

    void reap() noexcept {
        int status = 0;
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        exit_ = decode_wait_status(status);
        pid_ = -1;
    }
    void drain() noexcept {
        if (!out_) {
            return;
        }
        char buf[4096];
        for (;;) {
            pollfd p{out_.get(), POLLIN, 0};
            if (::poll(&p, 1, 0) <= 0 || (p.revents & (POLLIN | POLLHUP)) == 0) {
                return;
            }
            const ssize_t n = ::read(out_.get(), buf, sizeof buf);
            if (n <= 0) {
                out_.reset();
                return;
            }
            output_.append(buf, static_cast<std::size_t>(n));
        }
    }
    static std::string resolve(const std::string& name) {
        if (name.find('/') != std::string::npos) {
            return name;
        }
        const char* env_path = std::getenv("PATH");
        std::string paths = env_path != nullptr ? env_path : "/usr/sbin:/usr/bin:/sbin:/bin";
        paths += ":/usr/sbin:/sbin";
        std::size_t start = 0;
        while (start <= paths.size()) {
            std::size_t end = paths.find(':', start);
            if (end == std::string::npos) {
                end = paths.size();
            }
            std::string cand = paths.substr(start, end - start) + "/" + name;
            if (end > start && ::access(cand.c_str(), X_OK) == 0) {
                return cand;
            }
            start = end + 1;
        }
        return {};
    }
    static std::vector<std::string> merged_env(const std::vector<std::string>& extra) {
        std::vector<std::string> out;
        for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
            std::string kv(*e);
            const auto name = kv.substr(0, kv.find('=') + 1);
            bool overridden = false;
            for (const auto& x : extra) {
                if (x.compare(0, name.size(), name) == 0) {
                    overridden = true;
                }
            }
            if (!overridden) {
                out.push_back(std::move(kv));
            }
        }
        out.insert(out.end(), extra.begin(), extra.end());
        return out;
    }

    pid_t pid_ = -1;
    UniqueFd pidfd_;
    UniqueFd out_;
    std::string output_;
    int exit_ = -1;
};

struct RunResult {
    int exit_code = -1;  // decode_wait_status
    std::string output;  // stdout and stderr interleaved
};

/// Runs argv to completion (bounded by timeout_ms; on timeout the child is killed and
/// std::errc::timed_out returned). A non-zero exit is a RunResult, not an error.
inline Result<RunResult> run(const std::vector<std::string>& argv, int timeout_ms,
                             SpawnOptions opt = {}) noexcept {
    opt.capture_output = true;
    auto p = Subprocess::spawn(argv, opt);
    if (!p) {
        return fail(p.error());
    }
    auto st = p->wait(timeout_ms);
    if (!st) {
        p->terminate(0);
        return fail(st.error());
    }
    return RunResult{*st, p->output()};
}

}  // namespace hv
