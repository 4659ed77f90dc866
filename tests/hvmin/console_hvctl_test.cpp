// `hvctl console` against the in-process hv-min: output, input, Ctrl-] detach (exit 0).
#ifdef HVCTL_BIN
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "harness.hpp"

using namespace std::chrono_literals;

TEST_CASE("hvctl console shows output, sends input and detaches on Ctrl-right-bracket with exit 0",
          "[hvmin][console][tools]") {
    hv::hvmin::test::Harness h;
    hv::hvmin::DomainConfig cfg;
    cfg.name = "consoled";
    cfg.memory_pages = 32;
    cfg.argv = {HVMIN_CONSOLE_GUEST, "echo", "greetings"};
    auto d = h.ts->create(cfg);
    REQUIRE(d);
    int in[2];
    int out[2];
    REQUIRE(::pipe(in) == 0);
    REQUIRE(::pipe(out) == 0);
    const std::string rundir = h.dir.path().string();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(in[0], 0);
        ::dup2(out[1], 1);
        ::close(in[1]);
        ::close(out[0]);
        ::alarm(20);
        ::execl(HVCTL_BIN, "hvctl", "--rundir", rundir.c_str(), "console", "consoled", nullptr);
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    auto read_until = [&](const std::string& want) {
        std::string got;
        const auto end = std::chrono::steady_clock::now() + 10s;
        while (got.find(want) == std::string::npos && std::chrono::steady_clock::now() < end) {
            pollfd p{out[0], POLLIN, 0};
            if (::poll(&p, 1, 10000) <= 0) {
                break;
            }
            char buf[1024];
            const ssize_t n = ::read(out[0], buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            got.append(buf, static_cast<std::size_t>(n));
        }
        return got;
    };
    CHECK(read_until("greetings\n").find("greetings\n") != std::string::npos);
    REQUIRE(::write(in[1], "ping\n", 5) == 5);
    CHECK(read_until("got: ping\n").find("got: ping\n") != std::string::npos);
    REQUIRE(::write(in[1], "\x1d", 1) == 1);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    ::close(in[1]);
    ::close(out[0]);
    CHECK(h.core->domain_count() == 1);  // detaching leaves the domain running
}
#endif
