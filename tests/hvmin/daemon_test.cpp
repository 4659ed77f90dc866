// The hv-min daemon binary and per-thread channels.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <thread>

#include "harness.hpp"
#include "skip.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace std::chrono_literals;

TEST_CASE("the hv-min daemon serves its rundir and stops on SIGTERM, taking its domains along",
          "[hvmin][daemon]") {
    hv::test::require_root();  // the daemon accepts only uid 0 as dom0
    hv::test::TempDir dir("hvmin-daemon");
    const std::string rundir = dir.str();
    auto [pid, ts] = start_daemon(rundir);
    auto l = ts->list();
    REQUIRE(l);
    CHECK(l->size() == 1);
    DomainConfig c;
    c.name = "sleeper";
    c.memory_pages = 4;
    c.argv = {"/bin/sleep", "60"};
    auto d = ts->create(c);
    REQUIRE(d);
    l = ts->list();
    REQUIRE(l);
    REQUIRE(l->size() == 2);
    const pid_t child = (*l)[1].pid;
    REQUIRE(::kill(pid, SIGTERM) == 0);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    CHECK(::kill(child, 0) != 0);  // the domain died with hv-min
}

TEST_CASE("worker threads use their own cloned channels concurrently", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    constexpr int kThreads = 4;
    std::vector<std::uint32_t> refs;
    for (int i = 0; i < kThreads; ++i) {
        refs.push_back(static_cast<std::uint32_t>(g.num("grant 0 " + std::to_string(i + 1) + " 0")));
    }
    std::atomic<int> ok{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < kThreads; ++i) {
        auto svc = h.dom0().clone();
        REQUIRE(svc);
        ts.emplace_back([&ok, &g, &refs, i, s = std::move(*svc)]() mutable {
            for (int k = 0; k < 200; ++k) {
                auto m = s.grants().map(g.domid, GrantRef(refs[i]), false);
                if (!m) {
                    return;
                }
                m->data()[0] = std::byte{static_cast<unsigned char>('a' + i)};
            }
            ok++;
        });
    }
    for (auto& t : ts) {
        t.join();
    }
    CHECK(ok.load() == kThreads);
    for (int i = 0; i < kThreads; ++i) {
        CHECK(g.cmd("read " + std::to_string(i + 1) + " 0 1") == std::string("ok ") + char('a' + i));
        CHECK(g.num("flags " + std::to_string(refs[i])) == rings::GTF_permit_access);
    }
}
