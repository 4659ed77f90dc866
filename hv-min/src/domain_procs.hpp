// A domain's processes: each domain's program starts inside a cgroup v2 of its own, so every
// process it ever starts (double-forked, setsid daemons included) stays accountable to the
// domain and is killed with it (cgroup.kill) — see hv-min/README.md "Processes" for why a
// cgroup and not a pid namespace. Where no cgroup2 hierarchy is usable, the domain's session
// (process group) is the fallback, and that is logged once.
// Layer: hv-min (L1), internal to hv::hvmin_core. Not thread-safe; hv-min's loop thread only.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::hvmin::procs {

/// The first cgroup2 mount point in /proc/mounts-formatted text (octal escapes decoded).
std::optional<std::filesystem::path> find_cgroup2_mount(std::string_view proc_mounts);
/// This process's cgroup v2 path ("0::PATH" line) in /proc/self/cgroup-formatted text.
std::optional<std::string> own_cgroup2_path(std::string_view proc_self_cgroup);

/// "NAME state S" from a /proc/PID/stat-formatted text (the name may hold spaces and ')': the
/// state follows the last ')'); nullopt for text of another shape.
std::optional<std::string> describe_stat(std::string_view proc_pid_stat);
/// "pid P (NAME) state S wchan W" for a live process, read from /proc (what a process that
/// SIGKILL has not ended is waiting in: state D and the kernel function of wchan); "pid P
/// (gone)" when it is no longer there.
std::string describe_process(pid_t pid);

/// One domain's cgroup. Empty (dir().empty()) when hv-min runs without cgroups.
class Cgroup {
public:
    Cgroup() = default;
    const std::filesystem::path& dir() const { return dir_; }
    bool valid() const { return dirfd_.valid(); }
    int dirfd() const { return dirfd_.get(); }
    /// cgroup.events: EPOLLPRI when "populated" changes; call populated() to rearm.
    int events_fd() const { return events_.get(); }
    /// True while any process lives in it (false for an invalid Cgroup).
    bool populated() const;
    /// SIGKILLs every process in it (cgroup.kill; one by one from cgroup.procs where that file
    /// is missing). Idempotent.
    void kill() const;
    /// Waits (poll on cgroup.events) until no process is in it, at most `timeout_ms`.
    /// False if some still are.
    bool wait_empty(int timeout_ms) const;
    /// Removes the directory (it must be empty). Logs a failure; idempotent.
    void remove();
    /// An existing cgroup directory. Errors: open errno.
    static Result<Cgroup> open(const std::filesystem::path& dir);

private:
    std::filesystem::path dir_;
    UniqueFd dirfd_;
    UniqueFd events_;
};

/// The directory under which one Core creates its domains' cgroups:
/// <base>/hvmin.<pid>.<n>, made at the first domain, removed when this object is destroyed.
/// Opening one also ends what an hv-min that did not stop (SIGKILL, crash) left beside it:
/// every `hvmin.<pid>.<n>` whose pid no longer exists has its processes killed and is removed.
class CgroupParent {
public:
    /// `where`: "" = find the cgroup2 mount in /proc/mounts and use hv-min's own cgroup;
    /// "none" = no cgroups; otherwise an existing cgroup2 directory to create ours under.
    /// nullptr when no cgroup is usable (the reason is logged: process groups are the fallback).
    static std::unique_ptr<CgroupParent> open(const std::string& where);
    ~CgroupParent();
    CgroupParent(const CgroupParent&) = delete;
    CgroupParent& operator=(const CgroupParent&) = delete;
    /// hvmin.<pid>.<n> ("" until the first make()).
    const std::filesystem::path& dir() const { return dir_; }
    /// A new, empty child cgroup `name`. Errors: mkdir/open errno.
    Result<Cgroup> make(const std::string& name);

private:
    explicit CgroupParent(std::filesystem::path base) : base_(std::move(base)) {}
    std::filesystem::path base_;
    std::filesystem::path dir_;
};

struct Spawned {
    pid_t pid = -1;
    UniqueFd pidfd;
    bool in_cgroup = false;  ///< false: the cgroup refused it and it runs in hv-min's (logged)
};

/// Starts argv[0] (an absolute path) with exactly `envp`, in a new session, signals unblocked
/// and at their defaults, `keep_fd` inherited (every other fd of hv-min is close-on-exec), and
/// — when `cg` is valid — born inside `cg` (clone3 CLONE_INTO_CGROUP: no moment where it could
/// fork outside). Errors: clone3's errno, or the errno execve failed with (the child is reaped).
Result<Spawned> spawn(const std::vector<char*>& argv, const std::vector<char*>& envp,
                      int keep_fd, const Cgroup& cg);

}  // namespace hv::hvmin::procs
