// Processes and domains for hvbench suites: a forked child running one side of a case, a
// line-based control socket, and BenchHost (an in-process hv-min Core in a private rundir,
// this process as dom0, domains whose program is hvbench itself in `--helper` mode).
// Layer: tools (top). Used by the driver thread of one suite at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/core.hpp"
#include "hvmin/toolstack.hpp"

namespace hv::bench {

/// A wait this long means a lost wake-up or a dead peer: the run fails instead of hanging.
inline constexpr int kWaitTimeoutMs = 10000;

std::error_code timed_out_error();
std::error_code bad_data_error();

/// A forked child process running one side of a case. The child is pinned to the second CPU,
/// dies with its parent (PR_SET_PDEATHSIG) and exits 0 if its side succeeded. The destructor
/// SIGKILLs (by pid) and reaps a child that was not waited for.
class Child {
public:
    /// Forks; the child runs `body` (which must only make system calls: other threads of
    /// this process may hold locks) and _exits.
    template <class F>
    static Result<Child> fork(F&& body) {
        const pid_t pid = fork_raw();
        if (pid < 0) {
            return fail_errno();
        }
        if (pid == 0) {
            const Result<void> rc = body();
            exit_child(rc ? 0 : 1);
        }
        return Child(pid);
    }
    Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
    Child& operator=(Child&&) = delete;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child();
    /// Reaps the child (its own waits are bounded, so this is too). Errors: bad_message if it
    /// failed, the waitpid errno.
    Result<void> wait() noexcept;

private:
    explicit Child(pid_t pid) noexcept : pid_(pid) {}
    static pid_t fork_raw() noexcept;  // in the child: PDEATHSIG, pinned to CPU 1
    [[noreturn]] static void exit_child(int code) noexcept;
    pid_t pid_;
};

/// One end of a newline-framed control conversation over a stream socket.
class ControlLine {
public:
    explicit ControlLine(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    /// Connects to a listening unix socket.
    static Result<ControlLine> connect(const std::string& path);
    Result<void> write_line(const std::string& line);
    /// The next line without its '\n'. Errors: timed_out, ECONNRESET on EOF.
    Result<std::string> read_line(int timeout_ms = kWaitTimeoutMs);
    /// write_line + read_line; a reply that does not start with "ok" is EPROTO.
    Result<std::vector<std::string>> call(const std::string& line, int timeout_ms = kWaitTimeoutMs);
    int fd() const noexcept { return fd_.get(); }

private:
    UniqueFd fd_;
    std::string buf_;
};

/// Splits on spaces.
std::vector<std::string> split_words(const std::string& s);
/// Parses an unsigned decimal number; EINVAL otherwise.
Result<std::uint64_t> parse_u64(const std::string& s);

/// An in-process hv-min in a private rundir with this process as dom0 (Toolstack), and
/// helper domains running `hvbench --helper NAME CTLPATH`.
class BenchHost {
public:
    /// `xenstore`: hv-min also hosts its XenStore ($rundir/xenstored.sock; the blk suite).
    /// `spin`: hv-min's loop spin window and this dom0 connection's reply spin (nullopt: their
    /// defaults, as deployed; 0: both always sleep — the sleeping cases).
    static Result<std::unique_ptr<BenchHost>> create(
        bool xenstore = false, std::optional<std::chrono::microseconds> spin = std::nullopt);
    ~BenchHost();  ///< destroys the domains, stops the core, removes the rundir
    BenchHost(const BenchHost&) = delete;
    BenchHost& operator=(const BenchHost&) = delete;

    struct Domain {
        DomId domid{0};
        ControlLine ctl;
    };
    /// Creates a domain running this program's helper `helper` and waits (bounded) until it
    /// has attached and said hello on its control socket.
    Result<Domain> spawn(const std::string& name, const std::string& helper,
                         std::uint64_t memory_pages, bool trusted);

    hvmin::Services& dom0() noexcept { return ts_->services(); }
    hvmin::Toolstack& toolstack() noexcept { return *ts_; }
    /// The in-process hv-min (its loop's stats).
    const hvmin::Core& core() const noexcept { return *core_; }
    /// The private rundir (hv-min.sock, xenstored.sock): for extra dom0 connections.
    const std::filesystem::path& rundir() const noexcept { return dir_; }

private:
    BenchHost() = default;
    std::filesystem::path dir_;
    std::unique_ptr<hvmin::Core> core_;
    std::unique_ptr<hvmin::Toolstack> ts_;
    std::vector<DomId> domains_;
    unsigned next_ctl_ = 0;
};

/// A helper domain's command handler: one request line (split) → the reply line. It may
/// write extra lines itself through `ctl` (e.g. "ok" before a long run, then "done").
using HelperHandler = Result<std::string> (*)(hvmin::Services& svc,
                                              const std::vector<std::string>& words,
                                              ControlLine& ctl);

/// The body of `hvbench --helper NAME CTLPATH` in a domain: attach to hv-min, connect to the
/// control socket, say "hello <domid>", answer commands until EOF or "exit". Exit code.
int run_helper_domain(const char* ctl_path, HelperHandler handler);

/// Latency sample (value = p50) of per-operation nanoseconds.
Sample latency_sample(const std::vector<double>& ns);

}  // namespace hv::bench
