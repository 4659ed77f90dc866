// README command 1's n-tier part (scripts/run-demo.sh --quick --part ntier): PostgreSQL in a db
// domain on ext4 over the FUSE file of an LVM-backed PV disk, pgbench in an app domain over the
// PV network. Checks the report, and that nothing is left behind — after a normal run and
// after a Ctrl-C (SIGINT to the whole process group, as a terminal sends it) in mid-benchmark.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <sstream>

#include "skip.hpp"
#include "text_match.hpp"
#include "tools_harness.hpp"

using namespace hv::test::tools;

namespace {

void require_ntier_tools() {
    hv::test::require_root();
    const ProcResult pg = run_process({"/bin/sh", "-c", "ls /usr/lib/postgresql/*/bin/postgres && command -v pgbench "
                                                        "&& command -v lvcreate && id postgres"});
    hv::test::skip_unless(pg.rc == 0, "needs PostgreSQL (postgresql), pgbench and lvm2 (scripts/install-deps.sh)");
    hv::test::skip_unless(::access("/dev/fuse", F_OK) == 0 && ::access("/dev/loop-control", F_OK) == 0,
                          "needs /dev/fuse and loop devices");
}

/// What the demo run with temp dir `dir` and pid `demo` left behind: the dir, its namespace
/// and VG, loop devices over its files, processes (PostgreSQL, hv-guest, backends) naming it.
/// Other runs of the demo may be going on at the same time: only this one's count.
std::string leftovers(const std::string& dir, const std::string& demo) {
    std::string out = std::filesystem::exists(dir) ? "dir " + dir + "\n" : "";
    const std::string sh =
        "ip netns list | grep -w 'hvdemo-" + demo + "'; "
        "LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings -o vg_name 2>/dev/null | grep -w 'hvdemo" + demo + "'; "
        "losetup -a | grep -F '" + dir + "'; pgrep -af '" + dir + "' | grep -v pgrep; true";
    out += run_process({"/bin/sh", "-c", sh}).out;
    return out;
}

/// The run's temp dir and pid, from its "[hv-min] started: ..., rundir DIR/run" and
/// "[netns] hvdemo-PID" lines.
std::pair<std::string, std::string> demo_ids(const std::string& out) {
    hv::test::Groups d;
    hv::test::Groups p;
    hv::test::re_search(out, R"(rundir (/tmp/hvkit-demo\.[A-Za-z0-9]+)/run)", &d);
    hv::test::re_search(out, R"(\[netns\] hvdemo-(\d+))", &p);
    return {d.empty() ? "" : d[1], p.empty() ? "" : p[1]};
}

}  // namespace

TEST_CASE("README command 1 n-tier part: PostgreSQL in db and pgbench in app report their work and leave nothing",
          "[system][tools][root][demo][ntier]") {
    require_ntier_tools();
    const ProcResult r = run_process({"/bin/bash", source_dir + "/scripts/run-demo.sh", "--quick", "--part", "ntier",
                                      "--build-dir", bin_dir + "/.."},
                                     std::chrono::seconds(240));
    INFO(r.out << r.err);
    CHECK(r.rc == 0);
    CHECK(r.out.find("RESULT: PASS") != std::string::npos);
    for (const char* line : {"db: PostgreSQL 15", "listening on 10.77.0.10:5432", "app: reached PostgreSQL",
                             "app: pgbench progress:", "over /tmp/hvkit-demo.", "/db/disk/xvda; initdb",
                             "db: PostgreSQL stopped, ext4 unmounted",
                             "path: PostgreSQL -> ext4 -> loop -> FUSE file (hv-guest) -> blkfront -> blkback -> LV on PV",
                             "loop device, VG/LV or file left"}) {
        CHECK(r.out.find(line) != std::string::npos);
    }
    hv::test::Groups m;
    REQUIRE(hv::test::re_search(
        r.out,
        R"(: ([0-9.]+) transactions/s, latency average ([0-9.]+) ms, (\d+) transactions, 0 failed)",
        &m));
    CHECK(std::stod(m[1]) > 0);
    CHECK(std::stod(m[2]) > 0);
    CHECK(std::stoull(m[3]) > 0);
    REQUIRE(hv::test::re_search(
        r.out,
        R"(disk \(blkback\) +: db xvda = LV hvdemo\d+/pgdata on /dev/loop\d+; (\d+) bytes written, (\d+) bytes read)",
        &m));
    CHECK(std::stoull(m[1]) >= 16u << 20);  // mkfs, initdb, pgbench -i at least
    REQUIRE(hv::test::re_search(
        r.out,
        R"(network \(netback\) +: db vif (\d+) bytes out, (\d+) in; app vif (\d+) bytes out, (\d+) in)",
        &m));
    for (int i = 1; i <= 4; ++i) {
        CHECK(std::stoull(m[i]) > 100000u);
    }
    CHECK(hv::test::re_search(
        r.out, R"(domains \(hvctl list\)  : db \(id \d+, \d+ MiB, state r-----\); app \(id \d+)"));
    const auto [dir, demo] = demo_ids(r.out);
    REQUIRE(!dir.empty());
    REQUIRE(!demo.empty());
    const std::string left = leftovers(dir, demo);
    INFO("leftovers:\n" << left);
    CHECK(left.empty());
}

TEST_CASE("README command 1 n-tier part: Ctrl-C in mid-benchmark tears everything down",
          "[system][tools][root][demo][ntier]") {
    require_ntier_tools();
    int out_pipe[2];
    REQUIRE(::pipe2(out_pipe, O_CLOEXEC) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::setpgid(0, 0);  // its own process group, as a shell job: Ctrl-C reaches all of it
        ::dup2(out_pipe[1], 1);
        ::dup2(out_pipe[1], 2);
        const std::string script = source_dir + "/scripts/run-demo.sh";
        const std::string build = bin_dir + "/..";
        ::execl("/bin/bash", "bash", script.c_str(), "--quick", "--part", "ntier", "--build-dir", build.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(out_pipe[1]);
    std::string out;
    bool interrupted = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
    for (;;) {
        pollfd p{out_pipe[0], POLLIN, 0};
        if (::poll(&p, 1, 1000) > 0) {
            char buf[4096];
            const ssize_t n = ::read(out_pipe[0], buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            out.append(buf, static_cast<std::size_t>(n));
        }
        if (!interrupted && out.find("app: pgbench progress:") != std::string::npos) {
            ::kill(-pid, SIGINT);  // what the terminal does on Ctrl-C
            interrupted = true;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(-pid, SIGKILL);
            break;
        }
    }
    ::close(out_pipe[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    INFO(out);
    REQUIRE(interrupted);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 130);
    // (the "interrupted" line may be lost: a command substitution running at that moment
    // takes the trap itself and the script then stops through set -e, with the same status)
    CHECK(out.find("RESULT: PASS") == std::string::npos);
    // The db domain's ext4 and its loop device go with the domain's mount namespace, a moment
    // after its last process.
    const auto [dir, demo] = demo_ids(out);
    REQUIRE(!dir.empty());
    REQUIRE(demo == std::to_string(pid));
    std::string left;
    CHECK(eventually([&] { return (left = leftovers(dir, demo)).empty(); }, std::chrono::seconds(20)));
    INFO("leftovers:\n" << left);
    CHECK(left.empty());
}
