// The per-domain watcher of `hvctl create`, as xl leaves one behind for each domain it starts:
// a background hvctl that waits for the domain's death and then does what the domain file's
// on_poweroff (program exited with 0) or on_crash (a signal, a non-zero exit, a hypercall
// socket closed) asks. destroy removes what the toolstack wrote for the domain (devices,
// those it serves as a driver domain, its XenStore home: the work of `hvctl destroy`), so a
// domain that dies on its own leaves nothing behind; preserve keeps all of it; restart
// cleans up and creates the domain again from the same file. A domain ended by
// `hvctl destroy` needs nothing more. Layer: tools. One thread.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <optional>
#include <ostream>
#include <thread>

#include "cli.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

namespace {

constexpr std::string_view kWatchVerb = "__watch";
/// A domain that keeps crashing is restarted at most once per this interval.
constexpr auto kRestartInterval = std::chrono::seconds(2);

/// xl logs each domain's watcher to /var/log/xen/xl-NAME.log; ours go to $HVCTL_LOG_DIR
/// (default /var/log/hvkit) as hvctl-NAME.log.
std::string log_path(const std::string& name) {
    const char* dir = std::getenv("HVCTL_LOG_DIR");
    const std::string d = dir != nullptr && *dir != '\0' ? dir : "/var/log/hvkit";
    return d + "/hvctl-" + name + ".log";
}

std::string now_text() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::string describe(const DomainEnd& e) {
    switch (e.how) {
        case DomainEnd::How::exited:
            return "exited with status " + std::to_string(e.status);
        case DomainEnd::How::killed:
            return "was killed by signal " + std::to_string(e.status);
        case DomainEnd::How::destroyed:
            return "was destroyed";
        case DomainEnd::How::disconnected:
            return "closed its hypercall connection";
    }
    return "ended";
}

std::optional<std::uint16_t> parse_domid(const std::string& t) {
    unsigned v = 0;
    const auto [p, e] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (e != std::errc() || p != t.data() + t.size() || v == 0 || v >= 0x7ff0) {
        return std::nullopt;
    }
    return static_cast<std::uint16_t>(v);
}

bool restarts(ActionOnShutdown a) {
    return a == ActionOnShutdown::restart || a == ActionOnShutdown::rename_restart ||
           a == ActionOnShutdown::coredump_restart || a == ActionOnShutdown::soft_reset;
}

/// execv's view of `args` (which must outlive it), built before a fork.
std::vector<char*> exec_argv(std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (std::string& a : args) {
        argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    return argv;
}

/// Runs `hvctl --rundir R create -q CFG [KEY=VALUE...]` and returns its exit status (it
/// starts the new domain's own watcher).
int create_again(const std::string& rundir, std::span<const std::string> cfg_and_overrides) {
    std::vector<std::string> args = {"hvctl", "--rundir", rundir, "create", "-q"};
    args.insert(args.end(), cfg_and_overrides.begin(), cfg_and_overrides.end());
    std::vector<char*> argv = exec_argv(args);
    const pid_t pid = ::fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        ::execv("/proc/self/exe", argv.data());
        ::_exit(127);
    }
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

}  // namespace

bool start_watcher(Cli& cli, std::uint16_t domid, const std::string& name, bool driver_domain,
                   const std::string& on_poweroff, const std::string& on_crash,
                   const std::string& cfg_path, const std::vector<std::string>& overrides) {
    std::error_code ec;
    const std::string cfg = std::filesystem::absolute(cfg_path, ec).string();
    const std::string log = log_path(name);
    std::filesystem::create_directories(std::filesystem::path(log).parent_path(), ec);
    std::vector<std::string> args = {"hvctl",   "--rundir",         cli.rundir,
                                     std::string(kWatchVerb), std::to_string(domid), name,
                                     driver_domain ? "1" : "0", on_poweroff, on_crash,
                                     cfg.empty() ? cfg_path : cfg};
    args.insert(args.end(), overrides.begin(), overrides.end());
    std::vector<char*> argv = exec_argv(args);
    cli.out.flush();
    cli.err.flush();
    // Two forks and setsid: the watcher belongs to no terminal or process group of the caller,
    // is nobody's child to reap, and holds none of its pipes (a caller reading hvctl's output
    // to EOF does not wait for the domain's death).
    const pid_t child = ::fork();
    if (child < 0) {
        cli.err << "warning: " << name << ": no watcher (fork: " << std::strerror(errno)
                << "): its death will leave its XenStore entries\n";
        return false;
    }
    if (child == 0) {
        ::setsid();
        const pid_t watcher = ::fork();
        if (watcher != 0) {
            ::_exit(watcher < 0 ? 1 : 0);
        }
        const int nul = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (out < 0) {
            out = nul;
        }
        if (nul < 0 || ::dup2(nul, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) {
            ::_exit(1);
        }
        ::close_range(3, ~0U, 0);
        ::execv("/proc/self/exe", argv.data());
        ::_exit(127);
    }
    int st = 0;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cli.err << "warning: " << name << ": no watcher could be started: its death will "
                                          "leave its XenStore entries\n";
        return false;
    }
    return true;
}

int verb_watch(Cli& cli, std::span<const std::string> args) {
    // DOMID NAME DRIVER POWEROFF CRASH CFG [KEY=VALUE...], as start_watcher passes them.
    ActionOnShutdown on_poweroff{}, on_crash{};
    const auto domid = args.size() >= 6 ? parse_domid(args[0]) : std::nullopt;
    if (!domid || (args[2] != "0" && args[2] != "1") || !parse_action(args[3], on_poweroff) ||
        !parse_action(args[4], on_crash)) {
        cli.err << "hvctl " << kWatchVerb << ": internal verb of hvctl create\n";
        return kExitUsage;
    }
    DomainRow dom;
    dom.domid = *domid;
    dom.name = args[1];
    dom.driver_domain = args[2] == "1";
    const std::string who = dom.name + " (id " + args[0] + ")";
    cli.err << now_text() << " watching " << who << ": on_poweroff=" << to_string(on_poweroff)
            << " on_crash=" << to_string(on_crash) << std::endl;
    const auto started = std::chrono::steady_clock::now();
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    auto end = c->wait_for_death(dom.domid, std::chrono::milliseconds(-1));
    if (!end) {
        // hv-min went away (its domains with it) or never knew the domain.
        cli.err << now_text() << " " << who << ": " << end.error().message()
                << "; nothing to do\n";
        return kExitFailure;
    }
    if (end->how == DomainEnd::How::destroyed) {
        cli.err << now_text() << " " << who << " was destroyed by the toolstack\n";
        return kExitOk;
    }
    const ActionOnShutdown action = end->crashed() ? on_crash : on_poweroff;
    cli.err << now_text() << " " << who << " " << describe(*end) << ": "
            << (end->crashed() ? "on_crash" : "on_poweroff") << "=" << to_string(action)
            << std::endl;
    if (action == ActionOnShutdown::preserve) {
        cli.err << now_text() << " " << who << " preserved: its XenStore entries stay\n";
        return kExitOk;
    }
    if (action == ActionOnShutdown::coredump_destroy ||
        action == ActionOnShutdown::coredump_restart) {
        cli.err << now_text() << " " << who
                << ": no core is dumped by hvctl (the kernel's core_pattern decides)\n";
    }
    const int rc = destroy_domain(cli, *c, dom, false);
    cli.err << now_text() << " " << who << " cleaned up" << std::endl;
    if (!restarts(action)) {
        return rc;
    }
    if (const auto lived = std::chrono::steady_clock::now() - started; lived < kRestartInterval) {
        std::this_thread::sleep_for(kRestartInterval - lived);
    }
    const int created = create_again(cli.rundir, args.subspan(5));
    cli.err << now_text() << " " << who << " restarted: hvctl create exited " << created << "\n";
    return created == 0 ? kExitOk : kExitFailure;
}

}  // namespace hv::tools
