// A domain's processes: every process a domain starts (double-forked setsid daemons that
// ignore SIGTERM included) dies with the domain — on destroy, on its program's crash or exit,
// and when hv-min stops — before the death is reported; the domains' cgroups are removed.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "domain_procs.hpp"
#include "harness.hpp"
#include "skip.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// The process ran to its end: no /proc entry, or a zombie its (new) parent has yet to reap.
bool gone(pid_t pid) {
    const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    const auto rp = stat.rfind(')');
    return stat.empty() || (rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] == 'Z');
}

/// The cgroup v2 directory `pid` is in ("" when there is no cgroup2 mount).
fs::path cgroup_of(pid_t pid) {
    const auto mnt = procs::find_cgroup2_mount(read_text("/proc/mounts"));
    const auto own = procs::own_cgroup2_path(read_text("/proc/" + std::to_string(pid) + "/cgroup"));
    if (!mnt || !own) {
        return {};
    }
    return *mnt / fs::path(*own).relative_path();
}

bool have_cgroup2() {
    const auto mnt = procs::find_cgroup2_mount(read_text("/proc/mounts"));
    return mnt && ::access(mnt->c_str(), W_OK) == 0;
}

/// A shell script as a domain program: it starts a daemon the classic way (fork, the parent
/// exits, setsid, SIGTERM ignored), which writes its pid to `pidfile`, then runs `then`.
DomainConfig daemonising_domain(const std::string& name, const fs::path& pidfile,
                                const std::string& then) {
    DomainConfig c;
    c.name = name;
    c.memory_pages = 4;
    const std::string daemon = "trap '' TERM; echo \\$\\$ > " + pidfile.string() +
                               ".tmp; mv " + pidfile.string() + ".tmp " + pidfile.string() +
                               "; exec /bin/sleep 600";
    c.argv = {"/bin/sh", "-c",
              "( /usr/bin/setsid /bin/sh -c \"" + daemon + "\" </dev/null >/dev/null 2>&1 & ); " +
                  then};
    c.env = {"PATH=/usr/bin:/bin"};
    return c;
}

pid_t wait_pidfile(const fs::path& p) {
    for (int i = 0; i < 1000; ++i) {
        const std::string s = read_text(p);
        if (!s.empty()) {
            return static_cast<pid_t>(std::stol(s));
        }
        std::this_thread::sleep_for(10ms);  // a shell writes it: no readiness signal to wait on
    }
    return -1;
}

pid_t main_pid(Toolstack& ts, DomId d) {
    auto l = ts.list();
    REQUIRE(l);
    for (const auto& s : *l) {
        if (s.domid == d) {
            return s.pid;
        }
    }
    return -1;
}

/// The daemon escaped its domain's session and runs in the domain's own cgroup.
fs::path check_escaped_into_cgroup(pid_t daemon, pid_t main) {
    REQUIRE(daemon > 0);
    CHECK_FALSE(gone(daemon));
    CHECK(::getsid(daemon) != ::getsid(main));  // a process-group kill would miss it
    const fs::path cg = cgroup_of(daemon);
    CHECK(cg == cgroup_of(main));
    CHECK(cg.parent_path().filename().string().rfind("hvmin.", 0) == 0);
    CHECK(fs::is_directory(cg));
    return cg;
}

}  // namespace

TEST_CASE("cgroup2 mount and own cgroup are found in /proc text", "[hvmin][procs]") {
    const std::string mounts =
        "sysfs /sys sysfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
        "cgroup2 /sys/fs/cgroup/with\\040space cgroup2 rw 0 0\n"
        "cgroup2 /second cgroup2 rw 0 0";
    auto m = procs::find_cgroup2_mount(mounts);
    REQUIRE(m);
    CHECK(*m == "/sys/fs/cgroup/with space");
    CHECK_FALSE(procs::find_cgroup2_mount("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"));
    CHECK_FALSE(procs::find_cgroup2_mount(""));
    CHECK_FALSE(procs::find_cgroup2_mount("cgroup2 \n"));  // no type field
    CHECK(*procs::own_cgroup2_path("4:memory:/x\n0::/a/b\n") == "/a/b");
    CHECK_FALSE(procs::own_cgroup2_path("4:memory:/x\n1:name=systemd:/\n"));
}

TEST_CASE("destroy kills a setsid daemon that ignores SIGTERM and removes the domain's cgroup",
          "[hvmin][procs]") {
    hv::test::skip_unless(have_cgroup2(), "no writable cgroup2 mount");
    std::optional<Harness> h(std::in_place);
    const fs::path pidfile = h->dir / "daemon.pid";
    auto d = h->ts->create(daemonising_domain("daemoniser", pidfile, "exec /bin/sleep 600"));
    REQUIRE(d);
    const pid_t daemon = wait_pidfile(pidfile);
    const pid_t main = main_pid(*h->ts, *d);
    const fs::path cg = check_escaped_into_cgroup(daemon, main);
    REQUIRE(h->ts->destroy(*d));
    auto death = h->ts->wait_for_death(*d, 10000ms);
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::destroyed);
    // The death is reported only once every process of the domain is gone.
    CHECK(gone(daemon));
    CHECK(gone(main));
    CHECK_FALSE(fs::exists(cg));
    h.reset();
    CHECK_FALSE(fs::exists(cg.parent_path()));  // the Core's own cgroup goes with it
}

TEST_CASE("a crash of the domain's program takes its setsid daemon along", "[hvmin][procs]") {
    hv::test::skip_unless(have_cgroup2(), "no writable cgroup2 mount");
    Harness h;
    const fs::path pidfile = h.dir / "daemon.pid";
    auto d = h.ts->create(daemonising_domain("crasher", pidfile, "exec /bin/sleep 600"));
    REQUIRE(d);
    const pid_t daemon = wait_pidfile(pidfile);
    const pid_t main = main_pid(*h.ts, *d);
    const fs::path cg = check_escaped_into_cgroup(daemon, main);
    REQUIRE(::kill(main, SIGSEGV) == 0);
    auto death = h.ts->wait_for_death(*d, 10000ms);
    INFO((death ? std::string() : death.error().message()));
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::killed);
    CHECK(death->status == SIGSEGV);
    CHECK(gone(daemon));
    CHECK_FALSE(fs::exists(cg));
}

TEST_CASE("a program that exits leaving a daemon behind reports its exit and the daemon dies",
          "[hvmin][procs]") {
    hv::test::skip_unless(have_cgroup2(), "no writable cgroup2 mount");
    Harness h;
    const fs::path pidfile = h.dir / "daemon.pid";
    // The pg_ctl pattern: the program waits for its daemon to be up, then returns.
    auto d = h.ts->create(daemonising_domain(
        "pgctl", pidfile, "while [ ! -s " + pidfile.string() + " ]; do /bin/sleep 0.01; done; exit 3"));
    REQUIRE(d);
    const pid_t daemon = wait_pidfile(pidfile);
    REQUIRE(daemon > 0);
    const fs::path cg = cgroup_of(daemon);
    auto death = h.ts->wait_for_death(*d, 10000ms);
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::exited);
    CHECK(death->status == 3);
    CHECK(gone(daemon));
    CHECK_FALSE(fs::exists(cg));
}

TEST_CASE("the hv-min daemon stopped by SIGTERM leaves no process of any domain and no cgroup",
          "[hvmin][procs][daemon]") {
    hv::test::require_root();
    hv::test::skip_unless(have_cgroup2(), "no writable cgroup2 mount");
    hv::test::TempDir dir("hvmin-procs");
    auto [hvmin, ts] = start_daemon(dir.str());
    std::vector<pid_t> daemons;
    std::vector<fs::path> cgs;
    for (int i = 0; i < 2; ++i) {
        const fs::path pidfile = dir.path() / ("daemon" + std::to_string(i) + ".pid");
        auto d = ts->create(daemonising_domain("d" + std::to_string(i), pidfile, "exec /bin/sleep 600"));
        REQUIRE(d);
        daemons.push_back(wait_pidfile(pidfile));
        cgs.push_back(check_escaped_into_cgroup(daemons.back(), main_pid(*ts, *d)));
    }
    ts.reset();
    REQUIRE(::kill(hvmin, SIGTERM) == 0);
    int st = 0;
    REQUIRE(::waitpid(hvmin, &st, 0) == hvmin);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    for (std::size_t i = 0; i < daemons.size(); ++i) {
        CHECK(gone(daemons[i]));
        CHECK_FALSE(fs::exists(cgs[i]));
    }
    CHECK_FALSE(fs::exists(cgs[0].parent_path()));
}

TEST_CASE("the domains of an hv-min killed with SIGKILL are ended by the next hv-min on its cgroups",
          "[hvmin][procs][daemon]") {
    hv::test::require_root();
    hv::test::skip_unless(have_cgroup2(), "no writable cgroup2 mount");
    // A cgroup of this test's own as the base, so that only its hv-mins are involved.
    const fs::path base = cgroup_of(::getpid()) / ("hvmin-procs-test." + std::to_string(::getpid()));
    REQUIRE(::mkdir(base.c_str(), 0755) == 0);
    struct RemoveBase {
        fs::path p;
        ~RemoveBase() { ::rmdir(p.c_str()); }
    } remove_base{base};
    hv::test::TempDir dir("hvmin-procs");
    const fs::path pidfile = dir.path() / "daemon.pid";
    pid_t daemon = -1;
    fs::path cg;
    {
        auto [first, ts] = start_daemon((dir.path() / "a").string(), {"--cgroup", base.string()});
        auto d = ts->create(daemonising_domain("orphan", pidfile, "exec /bin/sleep 600"));
        REQUIRE(d);
        daemon = wait_pidfile(pidfile);
        cg = check_escaped_into_cgroup(daemon, main_pid(*ts, *d));
        CHECK(cg.parent_path().parent_path() == base);
        REQUIRE(::kill(first, SIGKILL) == 0);
        REQUIRE(::waitpid(first, nullptr, 0) == first);
    }
    // Nothing could stop it: its domain's processes run on.
    CHECK_FALSE(gone(daemon));
    CHECK(fs::exists(cg));
    auto [second, ts] = start_daemon((dir.path() / "b").string(), {"--cgroup", base.string()});
    // The second one ended them when it started (before it listened).
    CHECK(gone(daemon));
    CHECK_FALSE(fs::exists(cg));
    CHECK_FALSE(fs::exists(cg.parent_path()));
    ts.reset();
    REQUIRE(::kill(second, SIGTERM) == 0);
    int st = 0;
    REQUIRE(::waitpid(second, &st, 0) == second);
    CHECK(WIFEXITED(st));
    std::size_t subdirs = 0;  // the second one made no directory: it had no domain
    for (const auto& e : fs::directory_iterator(base)) {
        subdirs += e.is_directory() ? 1 : 0;
    }
    CHECK(subdirs == 0);
}

TEST_CASE("without a usable cgroup2 hierarchy hv-min falls back to the domain's process group",
          "[hvmin][procs]") {
    // "none" (disabled) and a directory that is no cgroup (mkdir fails): the fallback.
    const std::string where = GENERATE(std::string("none"), std::string("/proc/hvkit-no-cgroup"));
    CoreConfig cfg;
    cfg.cgroup = where;
    Harness h(cfg);
    const fs::path pidfile = h.dir / "child.pid";
    DomainConfig c;
    c.name = "pgroup";
    c.memory_pages = 4;
    c.argv = {"/bin/sh", "-c", "/bin/sleep 600 & echo $! > " + pidfile.string() + "; exec /bin/sleep 600"};
    auto d = h.ts->create(c);
    REQUIRE(d);
    const pid_t child = wait_pidfile(pidfile);
    REQUIRE(child > 0);
    CHECK(cgroup_of(child).string().find("hvmin.") == std::string::npos);
    REQUIRE(h.ts->destroy(*d));
    auto death = h.ts->wait_for_death(*d, 10000ms);
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::destroyed);
    // Its process group was killed; give the kernel a moment to deliver to the member.
    for (int i = 0; i < 200 && !gone(child); ++i) {
        std::this_thread::sleep_for(10ms);
    }
    CHECK(gone(child));
}
