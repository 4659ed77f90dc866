// hv/subprocess.hpp (used by the OVS helper and NetNs::exec): exit codes, output, environment,
// bounded waits, and ending a child by its pid.
#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "hv/subprocess.hpp"
#include "temp_dir.hpp"

TEST_CASE("a finished program's exit code and output are returned", "[common][subprocess]") {
    auto r = hv::run({"sh", "-c", "echo out; echo err >&2; exit 3"}, 5000);
    REQUIRE(r.has_value());
    CHECK(r->exit_code == 3);
    CHECK(r->output.find("out\n") != std::string::npos);
    CHECK(r->output.find("err\n") != std::string::npos);
}

TEST_CASE("extra environment entries override inherited ones", "[common][subprocess]") {
    hv::SpawnOptions o;
    o.env = {"HVKIT_X=42", "PATH=/usr/bin:/bin"};
    auto r = hv::run({"sh", "-c", "echo $HVKIT_X:$PATH"}, 5000, o);
    REQUIRE(r.has_value());
    CHECK(r->output == "42:/usr/bin:/bin\n");
}

TEST_CASE("a missing program is ENOENT before anything is forked", "[common][subprocess]") {
    auto p = hv::Subprocess::spawn({"hvkit-no-such-tool"});
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error() == std::errc::no_such_file_or_directory);
    CHECK(hv::Subprocess::spawn({}).error() == std::errc::invalid_argument);
}

TEST_CASE("waiting past the timeout leaves the child running, terminate ends it",
          "[common][subprocess]") {
    auto p = hv::Subprocess::spawn({"sleep", "30"});
    REQUIRE(p.has_value());
    CHECK(p->wait(50).error() == std::errc::timed_out);
    CHECK(p->running());
    p->terminate();
    CHECK_FALSE(p->running());
    CHECK(*p->wait(0) == 128 + SIGTERM);
}

TEST_CASE("a child that ignores SIGTERM is killed after the grace period",
          "[common][subprocess]") {
    auto p = hv::Subprocess::spawn({"sh", "-c", "trap '' TERM; echo ready; exec sleep 30"});
    REQUIRE(p.has_value());
    REQUIRE(p->wait_for_output("ready", 5000).has_value());
    const auto t0 = std::chrono::steady_clock::now();
    p->terminate(200);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    CHECK(*p->wait(0) == 128 + SIGKILL);
}

TEST_CASE("the parent's signal handlers never run in the child", "[common][subprocess]") {
    // Catch2 installs a SIGTERM handler in this process; a child signalled before exec must die
    // of the signal, not run that handler.
    for (int i = 0; i < 20; ++i) {
        auto p = hv::Subprocess::spawn({"sleep", "30"});
        REQUIRE(p.has_value());
        p->terminate();
        CHECK(*p->wait(0) == 128 + SIGTERM);
    }
}

TEST_CASE("waiting for a readiness line that never comes is bounded", "[common][subprocess]") {
    auto p = hv::Subprocess::spawn({"sh", "-c", "echo other"});
    REQUIRE(p.has_value());
    CHECK(p->wait_for_output("ready", 5000).error() == std::errc::no_child_process);
    auto q = hv::Subprocess::spawn({"sleep", "30"});
    REQUIRE(q.has_value());
    CHECK(q->wait_for_output("ready", 50).error() == std::errc::timed_out);
}

TEST_CASE("a daemon's output goes to its log file", "[common][subprocess]") {
    hv::test::TempDir dir;
    hv::SpawnOptions o;
    o.capture_output = false;
    o.log_path = dir.str() + "/log";
    auto p = hv::Subprocess::spawn({"sh", "-c", "echo logged"}, o);
    REQUIRE(p.has_value());
    REQUIRE(*p->wait(5000) == 0);
    std::ifstream f(o.log_path);
    std::stringstream ss;
    ss << f.rdbuf();
    CHECK(ss.str() == "logged\n");
}
