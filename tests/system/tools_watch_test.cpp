// hvctl create's watcher against the real hv-min: a domain that dies on its own is cleaned up
// (on_crash / on_poweroff = destroy), kept (preserve) or created again (restart), chosen by how
// it ended; `create -e` starts none; `destroy` ends the watcher without a second clean-up.
#include <signal.h>

#include <catch2/catch.hpp>

#include "skip.hpp"
#include "text_match.hpp"
#include "tools_harness.hpp"

using namespace hv::test::tools;

namespace {

/// A domain running `sh -c SCRIPT` with one disk served by Domain-0 (no blkback runs: its
/// backend never answers, which the clean-up must not wait for forever).
std::string sh_cfg(Daemon& d, const std::string& name, const std::string& script,
                   const std::string& extra = "") {
    return d.write_cfg(name + ".cfg", "name = \"" + name +
                                          "\"\nmemory = 16\nkernel = \"/bin/sh\"\ncmdline = "
                                          "\"-c '" + script + "'\"\ndisk = [ 'format=raw, "
                                          "vdev=xvda, access=rw, target=/dev/null' ]\n" + extra);
}

struct Store {
    explicit Store(const Daemon& d)
        : xs(std::move(*hv::xs::Client::connect(d.rundir() + "/xenstored.sock"))) {}
    bool has(const std::string& path) { return static_cast<bool>(xs->read(path)); }
    /// The domain's home and both halves of its vbd.
    bool has_any_of(int domid) {
        const std::string id = std::to_string(domid);
        return has("/local/domain/" + id + "/name") ||
               has("/local/domain/" + id + "/device/vbd/51712/backend") ||
               has("/local/domain/0/backend/vbd/" + id + "/51712/frontend");
    }
    bool has_all_of(int domid) {
        const std::string id = std::to_string(domid);
        return has("/local/domain/" + id + "/name") &&
               has("/local/domain/" + id + "/device/vbd/51712/backend") &&
               has("/local/domain/0/backend/vbd/" + id + "/51712/frontend");
    }
    std::unique_ptr<hv::xs::Client> xs;
};

bool log_has(const Daemon& d, const std::string& name, const std::string& text) {
    return d.watcher_log(name).find(text) != std::string::npos;
}

constexpr auto kCleanUp = std::chrono::seconds(30);  // the unanswered vbd alone takes 5 s

}  // namespace

TEST_CASE("a domain killed by a signal is cleaned up by its watcher (on_crash = destroy)",
          "[system][tools][watch][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    Store st(d);
    const ProcResult c = d.hvctl({"create", sh_cfg(d, "k", "exec sleep 1000")});
    REQUIRE(c.rc == 0);
    const int id = created_id(c.out);
    REQUIRE(st.has_all_of(id));
    CHECK(eventually([&] { return log_has(d, "k", "watching k (id " + std::to_string(id)); }));
    const pid_t pid = domain_pid(d, "k");
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGKILL) == 0);
    CHECK(eventually([&] { return log_has(d, "k", "cleaned up"); }, kCleanUp));
    INFO(d.watcher_log("k"));
    CHECK(log_has(d, "k", "was killed by signal 9: on_crash=destroy"));
    CHECK_FALSE(st.has_any_of(id));
    CHECK_FALSE(st.has("/local/domain/" + std::to_string(id)));
    CHECK_FALSE(st.has("/local/domain/0/backend/vbd/" + std::to_string(id)));
}

TEST_CASE("the watcher picks on_poweroff for an exit with 0 and on_crash for any other exit",
          "[system][tools][watch][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    Store st(d);
    const std::string actions = "on_poweroff = \"preserve\"\non_crash = \"destroy\"\n";
    // Both wait for a file, so the test sees their devices before they end.
    const std::string go = d.log_dir() + "/../go";
    const std::string wait = "while [ ! -e " + go + " ]; do sleep 0.05; done; ";
    const ProcResult off = d.hvctl({"create", sh_cfg(d, "off", wait + "exit 0", actions)});
    const ProcResult bad = d.hvctl({"create", sh_cfg(d, "bad", wait + "exit 3", actions)});
    REQUIRE(off.rc == 0);
    REQUIRE(bad.rc == 0);
    const int off_id = created_id(off.out);
    const int bad_id = created_id(bad.out);
    REQUIRE(st.has_all_of(off_id));
    REQUIRE(st.has_all_of(bad_id));
    ::close(::open(go.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    CHECK(eventually([&] { return log_has(d, "off", "preserved"); }, kCleanUp));
    CHECK(eventually([&] { return log_has(d, "bad", "cleaned up"); }, kCleanUp));
    INFO(d.watcher_log("off") << d.watcher_log("bad"));
    CHECK(log_has(d, "off", "exited with status 0: on_poweroff=preserve"));
    CHECK(log_has(d, "bad", "exited with status 3: on_crash=destroy"));
    CHECK(st.has_all_of(off_id));  // preserved: everything stays
    CHECK_FALSE(st.has_any_of(bad_id));
    CHECK_FALSE(log_has(d, "off", "cleaned up"));
}

TEST_CASE("on_crash = restart cleans up and creates the domain again from its file",
          "[system][tools][watch][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    Store st(d);
    const ProcResult c =
        d.hvctl({"create", sh_cfg(d, "again", "exec sleep 1000", "on_crash = 'restart'\n")});
    REQUIRE(c.rc == 0);
    const int first = created_id(c.out);
    const pid_t pid = domain_pid(d, "again");
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGTERM) == 0);
    CHECK(eventually([&] { return log_has(d, "again", "restarted: hvctl create exited 0"); },
                     kCleanUp));
    INFO(d.watcher_log("again"));
    CHECK(log_has(d, "again", "was killed by signal 15: on_crash=restart"));
    const pid_t second_pid = domain_pid(d, "again");
    CHECK(second_pid > 0);
    CHECK(second_pid != pid);
    CHECK_FALSE(st.has_any_of(first));
    // The new domain has its own id, devices and watcher; destroy ends that watcher quietly.
    const ProcResult l = d.hvctl({"list", "again"});
    hv::test::Groups m;
    REQUIRE(hv::test::re_search(l.out, R"(\nagain +(\d+) )", &m));
    const int second = std::stoi(m[1]);
    CHECK(second != first);
    CHECK(st.has_all_of(second));
    CHECK(eventually([&] {
        return log_has(d, "again", "watching again (id " + std::to_string(second) + ")");
    }));
    CHECK(d.hvctl({"destroy", "again"}).rc == 0);
    CHECK_FALSE(st.has_any_of(second));
    CHECK(eventually([&] {
        return log_has(d, "again",
                       "again (id " + std::to_string(second) + ") was destroyed by the toolstack");
    }));
}

TEST_CASE("create -e starts no watcher: a dead domain's entries stay, as before",
          "[system][tools][watch][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    Store st(d);
    const ProcResult c = d.hvctl({"create", "-e", sh_cfg(d, "plain", "exit 5")});
    REQUIRE(c.rc == 0);
    const int id = created_id(c.out);
    CHECK(eventually([&] { return d.hvctl({"list", "plain"}).rc == 1; }));
    // A watcher would have logged "watching" before the domain could end.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    CHECK(d.watcher_log("plain").empty());
    CHECK(st.has_all_of(id));
}

TEST_CASE("the watcher refuses arguments that hvctl create never passes",
          "[system][tools][watch][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
             {"__watch"},
             {"__watch", "0", "x", "0", "destroy", "destroy", "/c"},
             {"__watch", "70000", "x", "0", "destroy", "destroy", "/c"},
             {"__watch", "3x", "x", "0", "destroy", "destroy", "/c"},
             {"__watch", "3", "x", "2", "destroy", "destroy", "/c"},
             {"__watch", "3", "x", "0", "explode", "destroy", "/c"},
             {"__watch", "3", "x", "0", "destroy", "destroy"}}) {
        const ProcResult r = d.hvctl(bad);
        CHECK(r.rc == 2);
        CHECK(r.err == "hvctl __watch: internal verb of hvctl create\n");
    }
    // A domid hv-min does not know: the watcher says so and does nothing.
    const ProcResult r = d.hvctl({"__watch", "4000", "ghost", "0", "destroy", "destroy", "/c"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("watching ghost (id 4000)") != std::string::npos);
    CHECK(r.err.find("nothing to do") != std::string::npos);
}
