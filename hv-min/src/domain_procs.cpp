// A domain's processes: cgroup v2 per domain, spawn into it. Layer: hv-min (L1).
#include "domain_procs.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "hv/log.hpp"

namespace hv::hvmin::procs {

namespace {

std::string slurp(const char* path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// /proc/mounts escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_field(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' &&
            s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
            out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

std::vector<std::string_view> fields(std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') {
            ++i;
        }
        const std::size_t start = i;
        while (i < line.size() && line[i] != ' ') {
            ++i;
        }
        if (i > start) {
            out.push_back(line.substr(start, i - start));
        }
    }
    return out;
}

template <class F>
void for_each_line(std::string_view text, F&& f) {
    while (!text.empty()) {
        const auto nl = text.find('\n');
        f(text.substr(0, nl));
        if (nl == std::string_view::npos) {
            break;
        }
        text.remove_prefix(nl + 1);
    }
}

bool write_file_at(int dirfd, const char* name, const char* value) {
    UniqueFd f(::openat(dirfd, name, O_WRONLY | O_CLOEXEC));
    if (!f) {
        return false;
    }
    const auto len = static_cast<ssize_t>(std::strlen(value));
    return ::write(f.get(), value, static_cast<std::size_t>(len)) == len;
}

std::atomic<unsigned> g_parents{0};

}  // namespace

std::optional<std::filesystem::path> find_cgroup2_mount(std::string_view proc_mounts) {
    std::optional<std::filesystem::path> found;
    for_each_line(proc_mounts, [&](std::string_view line) {
        const auto f = fields(line);
        if (!found && f.size() >= 3 && f[2] == "cgroup2") {
            found = std::filesystem::path(unescape_mount_field(f[1]));
        }
    });
    return found;
}

std::optional<std::string> own_cgroup2_path(std::string_view proc_self_cgroup) {
    std::optional<std::string> found;
    for_each_line(proc_self_cgroup, [&](std::string_view line) {
        if (!found && line.substr(0, 3) == "0::") {
            found = std::string(line.substr(3));
        }
    });
    return found;
}

std::optional<std::string> describe_stat(std::string_view stat) {
    const auto open = stat.find('(');
    const auto close = stat.rfind(')');
    if (open == std::string_view::npos || close == std::string_view::npos || close < open ||
        close + 2 >= stat.size() || stat[close + 1] != ' ') {
        return std::nullopt;
    }
    const char state = stat[close + 2];
    if (state < 'A' || state > 'z') {
        return std::nullopt;
    }
    std::string name(stat.substr(open + 1, close - open - 1));
    for (char& c : name) {
        c = (c < 0x20 || c == 0x7f) ? '?' : c;  // a process names itself: keep logs one line
    }
    return name + " state " + state;
}

std::string describe_process(pid_t pid) {
    const std::string base = "/proc/" + std::to_string(pid);
    const std::string stat = slurp((base + "/stat").c_str());
    auto d = describe_stat(stat);
    if (!d) {
        return "pid " + std::to_string(pid) + " (gone)";
    }
    std::string wchan = slurp((base + "/wchan").c_str());
    if (wchan.empty() || wchan == "0") {
        wchan = "-";
    }
    const auto sp = d->rfind(" state ");
    return "pid " + std::to_string(pid) + " (" + d->substr(0, sp) + ")" + d->substr(sp) +
           " wchan " + wchan;
}

bool Cgroup::populated() const {
    if (!events_) {
        return false;
    }
    char buf[256];
    const ssize_t n = ::pread(events_.get(), buf, sizeof buf - 1, 0);
    if (n <= 0) {
        return false;
    }
    buf[n] = '\0';
    return std::strstr(buf, "populated 1") != nullptr;
}

void Cgroup::kill() const {
    if (!dirfd_) {
        return;
    }
    if (write_file_at(dirfd_.get(), "cgroup.kill", "1")) {
        return;
    }
    // A kernel before 5.14: signal what is listed; a process forking meanwhile is caught by the
    // next round (its child is listed once it exists).
    for (int round = 0; round < 8 && populated(); ++round) {
        UniqueFd f(::openat(dirfd_.get(), "cgroup.procs", O_RDONLY | O_CLOEXEC));
        if (!f) {
            return;
        }
        std::string text;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(f.get(), buf, sizeof buf)) > 0) {
            text.append(buf, static_cast<std::size_t>(n));
        }
        for_each_line(text, [](std::string_view l) {
            if (!l.empty()) {
                const long pid = std::strtol(std::string(l).c_str(), nullptr, 10);
                if (pid > 0) {
                    ::kill(static_cast<pid_t>(pid), SIGKILL);
                }
            }
        });
    }
}

bool Cgroup::wait_empty(int timeout_ms) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (populated()) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            until - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return false;
        }
        pollfd p{events_.get(), POLLPRI, 0};
        // The 100 ms cap only bounds a missed notification; populated() is re-read each time.
        (void)::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 100)));
    }
    return true;
}

Result<Cgroup> Cgroup::open(const std::filesystem::path& dir) {
    Cgroup cg;
    cg.dir_ = dir;
    cg.dirfd_ = UniqueFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg.dirfd_) {
        return fail_errno();
    }
    cg.events_ = UniqueFd(::openat(cg.dirfd_.get(), "cgroup.events", O_RDONLY | O_CLOEXEC));
    if (!cg.events_) {
        return fail_errno();
    }
    return cg;
}

void Cgroup::remove() {
    if (dir_.empty()) {
        return;
    }
    events_.reset();
    dirfd_.reset();
    if (::rmdir(dir_.c_str()) != 0 && errno != ENOENT) {
        HV_WARN("hv-min: cannot remove cgroup %s: %s", dir_.c_str(), std::strerror(errno));
    }
    dir_.clear();
}

namespace {

/// The pid in "hvmin.<pid>.<n>", or 0.
pid_t owner_of(const std::string& name) {
    if (name.rfind("hvmin.", 0) != 0) {
        return 0;
    }
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + 6, &end, 10);
    return pid > 0 && end != nullptr && *end == '.' ? static_cast<pid_t>(pid) : 0;
}

/// What hv-min instances that ended without stopping left under `base`: their domains still
/// run. Only directories whose hv-min pid no longer exists are touched (a live one is another
/// hv-min's, or — pid reused — left for later).
void end_stale(const std::filesystem::path& base) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(base, ec)) {
        const pid_t owner = owner_of(e.path().filename().string());
        if (owner <= 0 || !e.is_directory(ec) || ::kill(owner, 0) == 0 || errno != ESRCH) {
            continue;
        }
        std::size_t domains = 0;
        std::error_code ec2;
        for (const auto& d : std::filesystem::directory_iterator(e.path(), ec2)) {
            if (!d.is_directory(ec2)) {
                continue;
            }
            auto cg = Cgroup::open(d.path());
            if (!cg) {
                continue;
            }
            cg->kill();
            if (!cg->wait_empty(5000)) {
                HV_WARN("hv-min: processes left in %s after 5 s", d.path().c_str());
            }
            cg->remove();
            ++domains;
        }
        if (::rmdir(e.path().c_str()) == 0) {
            HV_WARN("hv-min: hv-min %d did not stop: the processes of its %zu domains were killed "
                    "and %s removed", static_cast<int>(owner), domains, e.path().c_str());
        }
    }
}

}  // namespace

std::unique_ptr<CgroupParent> CgroupParent::open(const std::string& where) {
    if (where == "none") {
        HV_INFO("hv-min: cgroups disabled; a domain's processes are its process group only "
                "(a daemon that calls setsid outlives its domain)");
        return nullptr;
    }
    std::filesystem::path base;
    if (where.empty()) {
        const auto mnt = find_cgroup2_mount(slurp("/proc/mounts"));
        if (!mnt) {
            HV_WARN("hv-min: no cgroup2 mount in /proc/mounts; a domain's processes are its "
                    "process group only (a daemon that calls setsid outlives its domain)");
            return nullptr;
        }
        base = *mnt;
        // Under hv-min's own cgroup when that is visible in this mount (it is not when the
        // mount's root is elsewhere, e.g. a cgroup namespace): then at the mount's root.
        if (auto own = own_cgroup2_path(slurp("/proc/self/cgroup")); own && *own != "/") {
            std::error_code ec;
            const auto mine = *mnt / std::filesystem::path(*own).relative_path();
            if (std::filesystem::is_directory(mine, ec)) {
                base = mine;
            }
        }
    } else {
        base = where;
    }
    end_stale(base);
    if (::access(base.c_str(), W_OK) != 0) {
        HV_WARN("hv-min: cannot create cgroups under %s (%s); a domain's processes are its process "
                "group only (a daemon that calls setsid outlives its domain)",
                base.c_str(), std::strerror(errno));
        return nullptr;
    }
    return std::unique_ptr<CgroupParent>(new CgroupParent(base));
}

CgroupParent::~CgroupParent() {
    if (!dir_.empty() && ::rmdir(dir_.c_str()) != 0) {
        HV_WARN("hv-min: cannot remove cgroup %s: %s", dir_.c_str(), std::strerror(errno));
    }
}

Result<Cgroup> CgroupParent::make(const std::string& name) {
    if (dir_.empty()) {
        // Made at the first domain, named after the pid that owns it then (the daemon forks
        // after creating its Core).
        auto dir = base_ / ("hvmin." + std::to_string(::getpid()) + "." +
                            std::to_string(g_parents.fetch_add(1)));
        if (::mkdir(dir.c_str(), 0755) != 0) {
            return fail_errno();
        }
        HV_INFO("hv-min: domains' cgroups under %s", dir.c_str());
        dir_ = std::move(dir);
    }
    const auto dir = dir_ / name;
    if (::mkdir(dir.c_str(), 0755) != 0) {
        return fail_errno();
    }
    auto cg = Cgroup::open(dir);
    if (!cg) {
        (void)::rmdir(dir.c_str());
    }
    return cg;
}

namespace {

/// clone3 with fork semantics (no CLONE_VM); into `cgroup_fd` when >= 0.
long clone3_child(int* pidfd, int cgroup_fd) {
    clone_args a{};
    a.flags = CLONE_PIDFD | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0);
    a.pidfd = reinterpret_cast<std::uintptr_t>(pidfd);
    a.exit_signal = SIGCHLD;
    a.cgroup = cgroup_fd >= 0 ? static_cast<std::uint64_t>(cgroup_fd) : 0;
    const long r = ::syscall(SYS_clone3, &a, sizeof a);
    if (r >= 0 || errno != ENOSYS || cgroup_fd >= 0) {
        return r;
    }
    // No clone3 (valgrind): the older clone(2) does the same for us (CLONE_PIDFD: 5.2). On
    // x86-64 its arguments are flags, stack, parent_tid (where the pidfd goes), child_tid, tls.
    return ::syscall(SYS_clone, CLONE_PIDFD | SIGCHLD, nullptr, pidfd, nullptr, nullptr);
}

/// The child between clone3 and execve: a copy of a multithreaded process, so only
/// async-signal-safe calls (no allocation, no locks).
[[noreturn]] void exec_child(const std::vector<char*>& argv, const std::vector<char*>& envp,
                             int keep_fd, int err_fd) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) {
        (void)::sigaction(s, &dfl, nullptr);  // fails harmlessly for SIGKILL/SIGSTOP/internal
    }
    (void)::setsid();
    if (keep_fd >= 0) {
        (void)::fcntl(keep_fd, F_SETFD, 0);
    }
    ::execve(argv[0], argv.data(), envp.data());
    const int e = errno;
    (void)!::write(err_fd, &e, sizeof e);
    ::_exit(127);
}

}  // namespace

Result<Spawned> spawn(const std::vector<char*>& argv, const std::vector<char*>& envp,
                      int keep_fd, const Cgroup& cg) {
    if (argv.empty() || argv[0] == nullptr || argv.back() != nullptr || envp.empty() ||
        envp.back() != nullptr) {
        return fail_errno(EINVAL);
    }
    int ep[2];
    if (::pipe2(ep, O_CLOEXEC) != 0) {
        return fail_errno();
    }
    UniqueFd err_rd(ep[0]);
    UniqueFd err_wr(ep[1]);
    Spawned s;
    int pidfd = -1;
    s.in_cgroup = cg.valid();
    long r = clone3_child(&pidfd, cg.valid() ? cg.dirfd() : -1);
    if (r < 0 && cg.valid()) {
        // A cgroup that takes no processes (controllers enabled under a cgroup that holds
        // processes, a delegation boundary): the program still runs, in hv-min's cgroup.
        HV_WARN("hv-min: cannot start a program in cgroup %s (%s): its process group only",
                cg.dir().c_str(), std::strerror(errno));
        s.in_cgroup = false;
        r = clone3_child(&pidfd, -1);
    }
    if (r < 0) {
        return fail_errno();
    }
    if (r == 0) {
        exec_child(argv, envp, keep_fd, err_wr.get());
    }
    s.pid = static_cast<pid_t>(r);
    s.pidfd = UniqueFd(pidfd);
    err_wr.reset();
    int e = 0;
    ssize_t n;
    do {
        n = ::read(err_rd.get(), &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof e)) {
        ::waitpid(s.pid, nullptr, 0);  // it _exits at once
        return fail_errno(e);
    }
    return s;
}

}  // namespace hv::hvmin::procs
