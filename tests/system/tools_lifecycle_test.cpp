// hvctl against the real hv-min: create / list / destroy of domains running hvdemo-domain,
// crashes (SIGKILL, abort) leave nothing behind, and README command 1 (run-demo.sh --quick).
#include <catch2/catch.hpp>
#include <filesystem>

#include "hvmin/toolstack.hpp"
#include "skip.hpp"
#include "text_match.hpp"
#include "tools_harness.hpp"

using namespace hv::test::tools;

namespace {

std::string idle_cfg(const Daemon& d, const std::string& name, const char* role = "idle",
                     unsigned memory_mib = 16) {
    return "name = \"" + name + "\"\nmemory = " + std::to_string(memory_mib) + "\nkernel = \"" +
           bin_dir + "/hvdemo-domain\"\ncmdline = \"" + role + " --status " + d.status_fifo() +
           "\"\n";
}

bool listed(const Daemon& d, const std::string& name) {
    const ProcResult r = d.hvctl({"list"});
    return r.out.find("\n" + name + " ") != std::string::npos;
}

/// What must hold once a domain is gone: no process, not listed, hv-min's fds and rundir
/// back to what they were before it was created.
void check_nothing_left(Daemon& d, pid_t pid, const std::string& name, std::size_t fds,
                        const std::set<std::string>& rundir) {
    CHECK_FALSE(listed(d, name));
    CHECK(eventually([&] { return ::kill(pid, 0) != 0; }));
    CHECK(eventually([&] { return fd_count(d.pid()) == fds; }));
    INFO("hv-min fds now " << fd_count(d.pid()) << ", baseline " << fds);
    CHECK(fd_count(d.pid()) == fds);
    CHECK(dir_entries(d.rundir()) == rundir);
    CHECK(d.alive());
}

}  // namespace

TEST_CASE("hvctl create, list and destroy run a real domain and leave nothing behind",
          "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::size_t fds = settled_fd_count(d.pid());
    const auto rundir = dir_entries(d.rundir());

    const std::string cfg = d.write_cfg("idle.cfg", idle_cfg(d, "idle1", "idle", 24));
    const ProcResult c = d.hvctl({"create", cfg});
    INFO(c.err << d.log());
    REQUIRE(c.rc == 0);
    const int domid = created_id(c.out);
    REQUIRE(domid > 0);
    CHECK(d.status_line() == "idle " + std::to_string(domid) + " attached");

    const ProcResult l = d.hvctl({"list"});
    REQUIRE(l.rc == 0);
    CHECK(l.out.rfind(
              "Name                                        ID   Mem VCPUs     State    Time(s)\n"
              "Domain-0                                     0 ",
              0) == 0);
    CHECK(hv::test::re_search(
        l.out, "\nidle1 +" + std::to_string(domid) + " +24 +[0-9]+ +r----- +[0-9.]+\n"));
    const pid_t pid = domain_pid(d, "idle1");
    REQUIRE(pid > 0);
    CHECK(::kill(pid, 0) == 0);
    CHECK(d.hvctl({"list", std::to_string(domid)}).out.find("idle1") != std::string::npos);
    const ProcResult info = d.hvctl({"info"});
    CHECK(info.rc == 0);
    CHECK(info.out.find("nr_domains             : 2\n") != std::string::npos);

    // A second domain with the same name is refused by hv-min.
    const ProcResult dup = d.hvctl({"create", cfg});
    CHECK(dup.rc == 1);
    CHECK(dup.err.find("hvctl create: idle1: ") != std::string::npos);

    const ProcResult x = d.hvctl({"destroy", "idle1"});
    INFO(x.err);
    CHECK(x.rc == 0);
    check_nothing_left(d, pid, "idle1", fds, rundir);
}

TEST_CASE("a domain killed with SIGKILL is released completely", "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::size_t fds = settled_fd_count(d.pid());
    const auto rundir = dir_entries(d.rundir());
    const ProcResult c = d.hvctl({"create", d.write_cfg("k.cfg", idle_cfg(d, "victim"))});
    REQUIRE(c.rc == 0);
    const int domid = created_id(c.out);
    REQUIRE(d.status_line() == "idle " + std::to_string(domid) + " attached");
    const pid_t pid = domain_pid(d, "victim");
    REQUIRE(pid > 0);

    {
        auto ts = hv::hvmin::Toolstack::connect(d.rundir());
        REQUIRE(ts);
        REQUIRE(::kill(pid, SIGKILL) == 0);
        auto death = ts->wait_for_death(hv::DomId(static_cast<std::uint16_t>(domid)),
                                        std::chrono::seconds(10));
        // hv-min may see the hypercall socket hang up before it reaps the process; the death
        // it reports is still the signal's (a death already reaped is answered from the recent
        // deaths, so the wait always has one).
        REQUIRE(death);
        CHECK(death->reason == hv::hvmin::wire::DeathReason::killed);
        CHECK(death->status == SIGKILL);
    }  // our toolstack connection closes here
    check_nothing_left(d, pid, "victim", fds, rundir);
    const ProcResult again = d.hvctl({"destroy", "victim"});
    CHECK(again.rc == 1);
    CHECK(again.err == "hvctl destroy: no domain named 'victim'\n");
}

TEST_CASE("a domain whose program aborts is released completely", "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::size_t fds = settled_fd_count(d.pid());
    const auto rundir = dir_entries(d.rundir());
    {
        auto ts = hv::hvmin::Toolstack::connect(d.rundir());
        REQUIRE(ts);
        const std::size_t fds_with_ts = settled_fd_count(d.pid());
        const ProcResult c =
            d.hvctl({"create", d.write_cfg("c.cfg", idle_cfg(d, "crasher", "crash"))});
        REQUIRE(c.rc == 0);
        const int domid = created_id(c.out);
        CHECK(d.status_line() == "crash " + std::to_string(domid) + " attached");
        auto death = ts->wait_for_death(hv::DomId(static_cast<std::uint16_t>(domid)),
                                        std::chrono::seconds(10));
        // hv-min may see the hypercall socket hang up before it reaps the process; the death
        // it reports is still the signal's (a death already reaped is answered from the recent
        // deaths, so the wait always has one).
        REQUIRE(death);
        CHECK(death->reason == hv::hvmin::wire::DeathReason::killed);
        CHECK(death->status == SIGABRT);
        CHECK(eventually([&] { return !listed(d, "crasher"); }));
        CHECK(eventually([&] { return fd_count(d.pid()) == fds_with_ts; }));
    }
    CHECK(eventually([&] { return fd_count(d.pid()) == fds; }));
    CHECK(dir_entries(d.rundir()) == rundir);
    CHECK(d.alive());
}

TEST_CASE("hvctl reports domains it cannot create or find as failures", "[system][tools][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    const std::size_t fds = settled_fd_count(d.pid());
    const ProcResult missing = d.hvctl(
        {"create", d.write_cfg("m.cfg", "name='ghost'\nmemory=8\nkernel='/nonexistent/prog'\n")});
    CHECK(missing.rc == 1);
    CHECK(missing.err.find("hvctl create: ghost: ") != std::string::npos);
    CHECK_FALSE(listed(d, "ghost"));
    CHECK(d.hvctl({"destroy", "42"}).err == "hvctl destroy: no domain with id '42'\n");
    const ProcResult dom0 = d.hvctl({"destroy", "0"});
    CHECK(dom0.rc == 1);
    CHECK(dom0.err == "hvctl destroy: Domain-0 cannot be destroyed\n");
    CHECK(d.hvctl({"list", "nobody"}).rc == 1);
    CHECK(eventually([&] { return fd_count(d.pid()) == fds; }));
    CHECK(d.alive());
}

TEST_CASE("hvctl cannot reach a daemon that is not there", "[system][tools]") {
    hv::test::TempDir dir;
    const ProcResult r = run_process({bin_dir + "/hvctl", "--rundir", dir.str(), "list"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl: cannot reach hv-min in " + dir.str()) != std::string::npos);
}

TEST_CASE("README command 1: run-demo.sh --quick passes and leaves nothing behind",
          "[system][tools][root][demo]") {
    hv::test::require_root();
    // Parts 1 and 2 (lifecycle, I/O); the n-tier part has its own tests (demo_ntier_test.cpp).
    const ProcResult r = run_process({"/bin/bash", source_dir + "/scripts/run-demo.sh", "--quick", "--part", "io",
                                      "--build-dir", bin_dir + "/.."},
                                     std::chrono::seconds(120));
    INFO(r.out << r.err);
    CHECK(r.rc == 0);
    CHECK(r.out.find("RESULT: PASS") != std::string::npos);
    for (const char* line : {"peer 1 ok grant-copied 2048 bytes", "granter 2 ok event received",
                             "grant copy (GNTTABOP) : 2048 bytes granter -> peer, verified",
                             "teardown              : hvctl destroy; no process, domain, device",
                             "block I/O (blkback)   : fio nbd randwrite 16 MiB verify=crc32c: 16384 KiB written, verified",
                             "4000000-byte nc copy sha256 match",
                             "backends stopped; namespace hvdemo-"}) {
        CHECK(r.out.find(line) != std::string::npos);
    }
    // The backends' statistics counted the work: 16 MiB written through blkback, the 4 MB
    // copy (plus headers) through netback.
    hv::test::Groups m;
    REQUIRE(hv::test::re_search(
        r.out, R"(blkback: (\d+) bytes written, \d+ read; netback: (\d+) bytes from the guest)",
        &m));
    CHECK(std::stoull(m[1]) >= 16u << 20);
    CHECK(std::stoull(m[2]) >= 4000000u);
    // Only this run's namespace: other runs of the demo may be going on at the same time.
    REQUIRE(hv::test::re_search(r.out, R"(namespace (hvdemo-\d+) deleted)", &m));
    const ProcResult ns = run_process({"/bin/sh", "-c", "ip netns list"});
    CHECK(ns.out.find(m[1] + " ") == std::string::npos);
    CHECK(ns.out.find(m[1] + "\n") == std::string::npos);
    REQUIRE(hv::test::re_search(r.out, R"(rundir (/tmp/hvkit-demo\.[A-Za-z0-9]+)/run)", &m));
    CHECK_FALSE(std::filesystem::exists(m[1]));
}
