// Debian's xenstore-utils (the stock C clients, libxenstore) against our `xenstored` daemon,
// pointed at it with XENSTORED_PATH: they must work unchanged and agree with expectations.
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>

#include "harness.hpp"
#include "skip.hpp"

using namespace hv::xs::test;

namespace {

struct Out {
    int rc = -1;
    std::string out;
};

class Daemon {
public:
    Daemon() : dir_("hvkit-xsd") {
        sock_ = dir_.str() + "/socket";
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::execl(HV_XENSTORED_BIN, "xenstored", "--socket", sock_.c_str(), "--quota",
                    "nodes=500", static_cast<char*>(nullptr));
            ::_exit(127);
        }
        // The daemon creates the socket before serving; wait for it (bounded).
        for (int i = 0; i < 500 && !std::filesystem::exists(sock_); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        REQUIRE(std::filesystem::exists(sock_));
    }
    ~Daemon() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int st = 0;
            ::waitpid(pid_, &st, 0);
        }
    }
    /// Stops the daemon and returns its exit status.
    int stop() {
        ::kill(pid_, SIGTERM);
        int st = 0;
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    /// Runs a shell command with XENSTORED_PATH set, bounded by timeout(1).
    Out run(const std::string& cmd) const {
        const std::string full =
            "XENSTORED_PATH='" + sock_ + "' timeout 10 " + cmd + " 2>/dev/null";
        Out o;
        FILE* f = ::popen(full.c_str(), "r");
        REQUIRE(f != nullptr);
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
            o.out.append(buf, n);
        }
        const int st = ::pclose(f);
        o.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        return o;
    }
    const std::string& socket() const { return sock_; }

private:
    hv::test::TempDir dir_;
    std::string sock_;
    pid_t pid_ = -1;
};

void need_tools() {
    hv::test::skip_unless(std::filesystem::exists("/usr/bin/xenstore-read"),
                          "xenstore-utils not installed (/usr/bin/xenstore-read)");
}

}  // namespace

TEST_CASE("xenstore-write, -read, -exists and -rm work against our daemon", "[xenstore][utils]") {
    need_tools();
    Daemon d;
    CHECK(d.run("xenstore-write /vm/name guest1 /vm/memory 512").rc == 0);
    Out r = d.run("xenstore-read /vm/name /vm/memory");
    CHECK(r.rc == 0);
    CHECK(r.out == "guest1\n512\n");
    CHECK(d.run("xenstore-exists /vm/name").rc == 0);
    CHECK(d.run("xenstore-exists /vm/nothing").rc != 0);
    CHECK(d.run("xenstore-read /vm/nothing").rc != 0);
    CHECK(d.run("xenstore-rm /vm/name").rc == 0);
    CHECK(d.run("xenstore-exists /vm/name").rc != 0);
    CHECK(d.run("xenstore-read /vm/memory").out == "512\n");
    CHECK(d.stop() == 0);
}

TEST_CASE("xenstore-ls and xenstore-list show the tree our daemon holds", "[xenstore][utils]") {
    need_tools();
    Daemon d;
    REQUIRE(d.run("xenstore-write /t/a 1 /t/b/c 2").rc == 0);
    Out l = d.run("xenstore-list /t");
    CHECK(l.rc == 0);
    CHECK(l.out == "a\nb\n");
    Out ls = d.run("xenstore-ls /t");
    CHECK(ls.rc == 0);
    CHECK(ls.out == "a = \"1\"\nb = \"\"\n c = \"2\"\n");
    Out root = d.run("xenstore-list /");
    CHECK(root.out == "local\ntool\nt\n");
}

TEST_CASE("xenstore-chmod sets permission lists that xenstore-ls -p shows", "[xenstore][utils]") {
    need_tools();
    Daemon d;
    REQUIRE(d.run("xenstore-write /p/x v").rc == 0);
    CHECK(d.run("xenstore-chmod /p/x n0 r5 b7").rc == 0);
    Out ls = d.run("xenstore-ls -p /p");
    CHECK(ls.rc == 0);
    CHECK(ls.out.find("(n0,r5,b7)") != std::string::npos);
    CHECK(d.run("xenstore-chmod /p/x q5").rc != 0);
    CHECK(d.run("xenstore-chmod /p/none n0").rc != 0);
}

TEST_CASE("xenstore-watch reports the initial event and later changes", "[xenstore][utils]") {
    need_tools();
    Daemon d;
    // -n 3: exit after three events (the initial one plus two writes).
    FILE* f = ::popen(("XENSTORED_PATH='" + d.socket() + "' timeout 10 xenstore-watch -n 3 /w")
                          .c_str(), "r");
    REQUIRE(f != nullptr);
    // Once the initial event is printed the watch is registered.
    char line[256];
    REQUIRE(std::fgets(line, sizeof line, f) != nullptr);
    CHECK(std::string(line) == "/w\n");
    REQUIRE(d.run("xenstore-write /w/a 1").rc == 0);
    REQUIRE(d.run("xenstore-write /other 1 /w 2").rc == 0);
    std::string rest;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        rest += line;
    }
    CHECK(::pclose(f) == 0);
    CHECK(rest == "/w/a\n/w\n");
}

TEST_CASE("the daemon keeps its quota option and answers through its socket", "[xenstore][utils]") {
    Daemon d;
    RawConn c = RawConn::connect_unix(d.socket());
    CHECK(c.call(hv::xs::MsgType::XS_GET_QUOTA, nul_join({"nodes"})).payload == "500"s + '\0');
    CHECK(d.stop() == 0);
}

TEST_CASE("without --socket the daemon listens on $XENSTORED_PATH", "[xenstore][utils]") {
    hv::test::TempDir dir("hvkit-xsd");
    const std::string sock = dir.str() + "/env-socket";
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::setenv("XENSTORED_PATH", sock.c_str(), 1);
        ::execl(HV_XENSTORED_BIN, "xenstored", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    for (int i = 0; i < 500 && !std::filesystem::exists(sock); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(std::filesystem::exists(sock));
    if (std::filesystem::exists(sock)) {
        RawConn c = RawConn::connect_unix(sock);
        CHECK(ok(c.write("/env", "1")));
    }
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    CHECK_FALSE(std::filesystem::exists(sock));  // removed at shutdown
}

TEST_CASE("the daemon rejects bad arguments", "[xenstore][utils]") {
    const std::string bin = HV_XENSTORED_BIN;
    auto rc = [&](const std::string& args) {
        const int st = std::system((bin + " " + args + " >/dev/null 2>&1").c_str());
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    };
    CHECK(rc("--quota bogus=1 --socket /nonexistent/dir/s") == 2);
    CHECK(rc("--frobnicate") == 2);
    CHECK(rc("--socket") == 2);
    CHECK(rc("--socket /nonexistent/dir/s") == 1);
}
