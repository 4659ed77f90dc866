// Behaviour comparison with Debian's own C xenstored (started by the team's xenstored-peer
// script on a private socket): the same requests must get the same replies from both.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "harness.hpp"
#include "skip.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

namespace {

const char* peer_script() {
    const char* env = std::getenv("HV_XENSTORED_PEER");
    return env != nullptr ? env : "/work/shared/peers/xenstored-peer";
}

/// Debian's C xenstored on a private socket; killed by pid on destruction.
class CPeer {
public:
    CPeer() : dir_("hvkit-xspeer") {
        const std::string cmd =
            std::string("timeout 60 ") + peer_script() + " c " + dir_.str() + " 2>/dev/null";
        FILE* f = ::popen(cmd.c_str(), "r");
        REQUIRE(f != nullptr);
        char line[64] = {};
        const bool got = std::fgets(line, sizeof line, f) != nullptr;
        const int st = ::pclose(f);
        REQUIRE(got);
        REQUIRE(WIFEXITED(st));
        REQUIRE(WEXITSTATUS(st) == 0);
        pid_ = static_cast<pid_t>(std::atoi(line));
        REQUIRE(pid_ > 0);
    }
    ~CPeer() {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
        }
    }
    std::string socket() const { return dir_.str() + "/socket"; }

private:
    hv::test::TempDir dir_;
    pid_t pid_ = -1;
};

struct Step {
    MsgType type;
    std::string payload;
    bool compare_payload = true;
};

struct Transcript {
    std::vector<std::string> replies;  // "type:payload" per step
    std::vector<std::string> events;   // the watcher's events, sorted (order is unspecified)
};

Transcript run(const std::string& socket, const std::vector<Step>& steps) {
    RawConn c = RawConn::connect_unix(socket);
    RawConn w = RawConn::connect_unix(socket);
    REQUIRE(ok(w.watch("/cmp", "W")));
    REQUIRE(w.event());
    Transcript t;
    for (const auto& s : steps) {
        Msg m = c.call(s.type, s.payload);
        t.replies.push_back(std::to_string(static_cast<unsigned>(m.type)) + ":" +
                            (s.compare_payload ? m.payload : std::string("*")));
    }
    while (auto e = c.event(0)) {  // c's own watch events
        t.replies.push_back("event:" + e->first + "/" + e->second);
    }
    REQUIRE(ok(w.unwatch("/cmp", "W")));  // a round trip: everything before it has arrived
    while (auto e = w.event(0)) {
        t.events.push_back(e->first);
    }
    std::sort(t.events.begin(), t.events.end());
    return t;
}

}  // namespace

TEST_CASE("our server answers like Debian's C xenstored", "[xenstore][peer]") {
    hv::test::skip_unless(std::filesystem::exists(peer_script()),
                          "xenstored-peer script not present (set HV_XENSTORED_PEER)");
    hv::test::skip_unless(std::filesystem::exists("/usr/lib/xen-4.17/bin/xenstored"),
                          "Debian xen-utils-4.17 (C xenstored) not installed");
    const std::vector<Step> steps = {
        {MsgType::XS_WRITE, nul_join({"/cmp/a/b"}) + "v"},
        {MsgType::XS_READ, nul_join({"/cmp/a/b"})},
        {MsgType::XS_READ, nul_join({"/cmp/a"})},
        {MsgType::XS_READ, nul_join({"/cmp/none"})},
        {MsgType::XS_DIRECTORY, nul_join({"/cmp"})},
        {MsgType::XS_DIRECTORY, nul_join({"/cmp/a"})},
        {MsgType::XS_DIRECTORY, nul_join({"/cmp/none"})},
        {MsgType::XS_MKDIR, nul_join({"/cmp/a"})},
        {MsgType::XS_MKDIR, nul_join({"/cmp/m/n"})},
        {MsgType::XS_WRITE, nul_join({"/cmp/a/b"}) + "v"},
        {MsgType::XS_WRITE, nul_join({"/cmp/bin"}) + "x\0y\xff"s},
        {MsgType::XS_READ, nul_join({"/cmp/bin"})},
        {MsgType::XS_RM, nul_join({"/cmp/ghost"})},
        {MsgType::XS_RM, nul_join({"/cmp/ghost/x"})},
        {MsgType::XS_RM, nul_join({"/"})},
        {MsgType::XS_WRITE, nul_join({"/cmp//x"}) + "v"},
        {MsgType::XS_WRITE, nul_join({"/cmp/x/"}) + "v"},
        {MsgType::XS_WRITE, nul_join({"/cmp/a b"}) + "v"},
        {MsgType::XS_READ, nul_join({"/cmp/a.b"})},
        {MsgType::XS_GET_PERMS, nul_join({"/cmp/a"})},
        {MsgType::XS_SET_PERMS, nul_join({"/cmp/a", "n0", "r5", "b7"})},
        {MsgType::XS_GET_PERMS, nul_join({"/cmp/a"})},
        {MsgType::XS_WRITE, nul_join({"/cmp/a/inherit"})},
        {MsgType::XS_GET_PERMS, nul_join({"/cmp/a/inherit"})},
        {MsgType::XS_SET_PERMS, nul_join({"/cmp/a", "x1"})},
        {MsgType::XS_SET_PERMS, nul_join({"/cmp/a"})},
        {MsgType::XS_SET_PERMS, nul_join({"/cmp/none", "n0"})},
        {MsgType::XS_WATCH, nul_join({"/cmp/w", "tok"})},
        {MsgType::XS_WATCH, nul_join({"/cmp/w", "tok"})},
        {MsgType::XS_UNWATCH, nul_join({"/cmp/zz", "tok"})},
        {MsgType::XS_UNWATCH, nul_join({"/cmp/w", "tok"})},
        {MsgType::XS_TRANSACTION_START, std::string("", 1), false},
        {MsgType::XS_TRANSACTION_END, nul_join({"X"})},
        {MsgType::XS_RESTRICT, nul_join({"1"})},
        {MsgType::XS_WATCH_EVENT, nul_join({"/cmp", "t"})},
        {MsgType::XS_ERROR, nul_join({"EINVAL"})},
        {static_cast<MsgType>(27), ""},
        {MsgType::XS_GET_DOMAIN_PATH, nul_join({"5"})},
        {MsgType::XS_IS_DOMAIN_INTRODUCED, nul_join({"7"})},
        {MsgType::XS_RESUME, nul_join({"7"})},
        {MsgType::XS_RELEASE, nul_join({"7"})},
        {MsgType::XS_RELEASE, nul_join({"0"})},
        {MsgType::XS_SET_TARGET, nul_join({"8", "7"})},
        {MsgType::XS_CONTROL, nul_join({"check"})},
        {MsgType::XS_CONTROL, nul_join({"frobnicate"})},
        {MsgType::XS_DIRECTORY_PART, nul_join({"/cmp/a", "0"}), false},
        {MsgType::XS_RM, nul_join({"/cmp/a"})},
        {MsgType::XS_READ, nul_join({"/cmp/a/b"})},
        {MsgType::XS_DIRECTORY, nul_join({"/cmp"})},
    };
    CPeer peer;
    Harness ours;
    const Transcript want = run(peer.socket(), steps);
    const Transcript got = run(ours.socket_path(), steps);
    REQUIRE(got.replies.size() == want.replies.size());
    for (std::size_t i = 0; i < want.replies.size(); ++i) {
        INFO("step " << i);
        CHECK(got.replies[i] == want.replies[i]);
    }
    CHECK(got.events == want.events);
}
