// Domains: create, list, destroy, death detection and what is released with it.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <thread>

#include "harness.hpp"
#include "skip.hpp"
#ifdef HVMIN_TEST_HAVE_XENSTORE
#include "xenstore/client.hpp"
#endif

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace std::chrono_literals;

namespace {
bool listed(Toolstack& ts, DomId d) {
    auto l = ts.list();
    REQUIRE(l);
    for (const auto& s : *l) {
        if (s.domid == d) {
            return true;
        }
    }
    return false;
}
}  // namespace

TEST_CASE("a created domain runs its program attached as its domid and is listed", "[hvmin][domain]") {
    Harness h;
    Puppet p(h, "guest1", {.pages = 40});
    const auto w = words(p.cmd("info"));
    REQUIRE(w.size() == 5);
    CHECK(w[1] == std::to_string(p.domid.get()));
    CHECK(w[2] == "0");   // not trusted
    CHECK(w[3] == "41");  // its frames: 40 of memory and its console page
    auto l = h.ts->list();
    REQUIRE(l);
    REQUIRE(l->size() == 2);
    CHECK((*l)[0].domid == DomId(0));
    CHECK((*l)[0].name == "Domain-0");
    CHECK((*l)[1].domid == p.domid);
    CHECK((*l)[1].name == "guest1");
    CHECK((*l)[1].memory_pages == 40);
    CHECK((*l)[1].pid > 0);
    CHECK((*l)[1].state == wire::DomainState::running);
    CHECK(h.core->domain_count() == 1);
}

TEST_CASE("destroy kills the domain's process group and the domain leaves the list", "[hvmin][domain]") {
    Harness h;
    Puppet p(h, "victim");
    auto l = h.ts->list();
    REQUIRE(l);
    const pid_t pid = (*l)[1].pid;
    REQUIRE(h.ts->destroy(p.domid));
    auto d = h.ts->wait_for_death(p.domid, 5000ms);
    // Either the death is reported, or the domain was already reaped (ESRCH).
    if (d) {
        CHECK(d->reason == wire::DeathReason::destroyed);
    } else {
        CHECK(d.error() == std::errc::no_such_process);
    }
    CHECK(::kill(pid, 0) != 0);
    CHECK(p.cmd("info").empty());
    CHECK_FALSE(listed(*h.ts, p.domid));
    CHECK(h.ts->destroy(p.domid).error() == std::errc::no_such_process);
    CHECK(h.ts->destroy(DomId(0)).error() == std::errc::operation_not_permitted);
}

TEST_CASE("a crashing domain program is detected at once and reported as killed", "[hvmin][domain]") {
    Harness h;
    Puppet p(h, "crasher");
    CHECK(p.cmd("crash").empty());
    auto d = h.ts->wait_for_death(p.domid, 5000ms);
    REQUIRE(d);
    CHECK(d->reason == wire::DeathReason::killed);
    CHECK(d->status == SIGABRT);
    CHECK_FALSE(listed(*h.ts, p.domid));
    // Asking again after the domain is gone still answers with the same death.
    auto again = h.ts->wait_for_death(p.domid, 50ms);
    REQUIRE(again);
    CHECK(again->reason == wire::DeathReason::killed);
    CHECK(again->status == SIGABRT);
}

TEST_CASE("a domain that exits reports its exit code to a waiter", "[hvmin][domain]") {
    Harness h;
    Puppet p(h, "exiter");
    // A raw dom0 connection: the wait request, then a list request on the same connection.
    // hv-min serves one connection in order, so once the list is answered the waiter is
    // registered and the exit code must reach it.
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", h.core->socket_path().c_str());
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    struct {
        wire::Header h;
        wire::DomainRef r;
    } wait_req{{wire::kMagic, static_cast<std::uint16_t>(wire::Op::domain_wait), 0, 1, 1},
               {p.domid.get(), 0, 0}};
    wire::Header list_req{wire::kMagic, static_cast<std::uint16_t>(wire::Op::domain_list), 0, 0, 2};
    REQUIRE(::send(fd.get(), &wait_req, sizeof wait_req, 0) == sizeof wait_req);
    REQUIRE(::send(fd.get(), &list_req, sizeof list_req, 0) == sizeof list_req);
    std::byte buf[65536];
    pollfd pf{fd.get(), POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 5000) == 1);
    REQUIRE(::recv(fd.get(), buf, sizeof buf, 0) > 0);
    wire::ReplyHeader rh;
    std::memcpy(&rh, buf, sizeof rh);
    REQUIRE(rh.seq == 2);
    p.cmd("exit 7");
    REQUIRE(::poll(&pf, 1, 5000) == 1);
    REQUIRE(::recv(fd.get(), buf, sizeof buf, 0) == sizeof rh + sizeof(wire::DeathInfo));
    std::memcpy(&rh, buf, sizeof rh);
    wire::DeathInfo di;
    std::memcpy(&di, buf + sizeof rh, sizeof di);
    CHECK(rh.seq == 1);
    CHECK(rh.rc == 0);
    CHECK(di.domid == p.domid.get());
    CHECK(di.reason == static_cast<std::uint16_t>(wire::DeathReason::exited));
    CHECK(di.status == 7);
}

TEST_CASE("waiting for a domain that never dies times out", "[hvmin][domain]") {
    Harness h;
    Puppet p(h, "stayer");
    auto d = h.ts->wait_for_death(p.domid, 50ms);
    REQUIRE_FALSE(d);
    CHECK(d.error() == make_error_code(Errc::timed_out));
    CHECK(h.ts->wait_for_death(DomId(999), 50ms).error() == std::errc::no_such_process);
}

TEST_CASE("create rejects bad configurations with errors", "[hvmin][domain][hostile]") {
    Harness h;
    DomainConfig c;
    c.name = "x";
    c.argv = {};
    CHECK(h.ts->create(c).error() == std::errc::invalid_argument);
    c.argv = {"/nonexistent/program"};
    CHECK(h.ts->create(c).error() == std::errc::no_such_file_or_directory);
    c.argv = {"/bin/true"};
    c.memory_pages = 0;
    CHECK(h.ts->create(c).error() == std::errc::invalid_argument);
    c.memory_pages = 1;
    c.name = std::string(80, 'n');
    CHECK(h.ts->create(c).error() == std::errc::invalid_argument);
    c.name = "";
    CHECK(h.ts->create(c).error() == std::errc::invalid_argument);
    c.name = "dup";
    c.gnttab_frames = 65;
    CHECK(h.ts->create(c).error() == std::errc::invalid_argument);
    c.gnttab_frames = 0;
    Puppet p(h, "dup");
    c.name = "dup";
    CHECK(h.ts->create(c).error() == std::errc::file_exists);
    CHECK(h.core->domain_count() == 1);
}

TEST_CASE("a domain cannot use the toolstack operations", "[hvmin][domain][hostile]") {
    Harness h;
    Puppet p(h, "unpriv");
    CHECK(p.cmd("toolop") == "ok " + std::to_string(-EPERM));
}

TEST_CASE("VIRQ_DOM_EXC wakes dom0 when a domain dies", "[hvmin][domain][evtchn]") {
    Harness h;
    auto w = h.ts->watch_deaths();
    REQUIRE(w);
    Puppet p(h, "dying");
    CHECK_FALSE(w->pending());
    p.cmd("exit 0");
    REQUIRE(w->wait(5000ms));
    CHECK(w->ack());
}

#ifdef HVMIN_TEST_HAVE_XENSTORE
TEST_CASE("each created domain gets a xenstore connection bound to its domid", "[hvmin][domain][xenstore]") {
    Harness h;
    auto x0 = xs::Client::connect((h.dir / "xenstored.sock").string(), {5000ms});
    REQUIRE(x0);
    auto& dom0 = **x0;
    Puppet p(h, "xsguest");
    const auto w = words(p.cmd("info"));
    REQUIRE(w.size() == 5);
    CHECK(w[4] == "xs");
    const std::string home = "/local/domain/" + std::to_string(p.domid.get());
    REQUIRE(dom0.mkdir(home));
    REQUIRE(dom0.set_perms(home, {xs::Permission{p.domid, xs::Access::none}}));
    CHECK(p.cmd("xswrite data hello") == "ok");  // relative: under its own home
    auto v = dom0.read(home + "/data");
    REQUIRE(v);
    CHECK(*v == "hello");
    CHECK(p.cmd("xswrite /local/domain/0/stolen x") == "err system " + std::to_string(EACCES));
    REQUIRE(dom0.watch("@releaseDomain", "rel"));
    auto first = dom0.wait_event(5000ms);  // the initial event
    REQUIRE(first);
    p.cmd("exit 0");
    auto ev = dom0.wait_event(5000ms);
    REQUIRE(ev);
    CHECK(ev->path == "@releaseDomain");
}

namespace {
const std::string kEacces = "err system " + std::to_string(EACCES);
const std::string kEperm = "err system " + std::to_string(EPERM);

std::string home_of(DomId d) { return "/local/domain/" + std::to_string(d.get()); }

/// The test's own dom0 connection to the harness's XenStore.
std::unique_ptr<xs::Client> dom0_store(Harness& h) {
    auto x = xs::Client::connect((h.dir / "xenstored.sock").string(), {5000ms});
    REQUIRE(x);
    return std::move(*x);
}

/// dom0's reply to a raw message (each arg NUL-terminated), NULs shown as spaces.
std::string raw(xs::Client& c, xs::MsgType t, const std::vector<std::string>& args) {
    std::string payload;
    for (const auto& a : args) {
        payload += a;
        payload += '\0';
    }
    auto r = c.request(t, payload);
    REQUIRE(r);
    std::string out = *r;
    std::replace(out.begin(), out.end(), '\0', ' ');
    return out;
}
}  // namespace

TEST_CASE("a real guest domain is denied other domains' and dom0's nodes, their watch events, "
          "owner changes and privileged messages, and is allowed its own home",
          "[hvmin][domain][xenstore][hostile][issue-3]") {
    Harness h;
    auto x0 = dom0_store(h);
    auto& dom0 = *x0;
    Puppet a(h, "xsa");
    Puppet b(h, "xsb");
    const std::string ida = std::to_string(a.domid.get());
    const std::string idb = std::to_string(b.domid.get());
    const std::string hb = home_of(b.domid);
    REQUIRE(dom0.write("/tool/secret", "dom0's"));

    // Its own home (made by hv-min at creation): data/ is its own, the home itself read-only.
    CHECK(a.cmd("xswrite data/x 1") == "ok");
    CHECK(a.cmd("xsread data/x") == "ok 1");
    CHECK(a.cmd("xsread domid") == "ok " + ida);
    CHECK(a.cmd("xswrite domid 7") == kEacces);
    CHECK(a.cmd("xsraw 10 " + ida) == "ok " + home_of(a.domid) + " ");  // GET_DOMAIN_PATH
    CHECK(a.cmd("xsgetperms data/x") == "ok n" + ida);

    // Another domain's nodes and dom0's: no read, write or removal.
    REQUIRE(b.cmd("xswrite data/secret b") == "ok");
    CHECK(a.cmd("xsread " + hb + "/data/secret") == kEacces);
    CHECK(a.cmd("xsread /tool/secret") == kEacces);
    CHECK(a.cmd("xswrite " + hb + "/data/evil 1") == kEacces);
    CHECK(a.cmd("xswrite /tool/evil 1") == kEacces);
    CHECK(a.cmd("xsrm " + hb + "/data/secret") == kEacces);
    CHECK(dom0.read(hb + "/data/secret").value_or("") == "b");
    CHECK_FALSE(dom0.read(hb + "/data/evil"));

    // Watches: registering is allowed (and gives the initial event), but no event comes for a
    // node it cannot read. Its own watch's event, written after b's, is the next it sees.
    REQUIRE(a.cmd("xswatch " + hb + "/data spy") == "ok");
    CHECK(a.cmd("xsevent 5000") == "ok " + hb + "/data spy");
    REQUIRE(a.cmd("xswatch data mine") == "ok");
    CHECK(a.cmd("xsevent 5000") == "ok data mine");
    REQUIRE(b.cmd("xswrite data/secret2 b") == "ok");
    REQUIRE(dom0.write(home_of(a.domid) + "/data/ping", "1"));
    CHECK(a.cmd("xsevent 5000") == "ok data/ping mine");

    // Permissions: only the owner sets them (EACCES), only dom0 changes an owner (EPERM).
    CHECK(a.cmd("xsperms " + hb + "/data/secret n" + ida) == kEacces);
    CHECK(a.cmd("xsperms " + home_of(a.domid) + " n" + ida) == kEacces);
    CHECK(a.cmd("xsperms data/x n" + idb) == kEperm);
    CHECK(a.cmd("xsgetperms data/x") == "ok n" + ida);
    CHECK(b.cmd("xsread " + home_of(a.domid) + "/data/x") == kEacces);
    // ... and what the owner grants, the other domain gets.
    REQUIRE(a.cmd("xsperms data/x n" + ida + " r" + idb) == "ok");
    CHECK(b.cmd("xsread " + home_of(a.domid) + "/data/x") == "ok 1");
    CHECK(b.cmd("xswrite " + home_of(a.domid) + "/data/x 2") == kEacces);

    // Privileged messages (xen-abi §4.2): EACCES, nothing changed.
    for (const std::string& m :
         {"8 " + idb + " 0 0",           // INTRODUCE
          "9 " + idb,                    // RELEASE
          "17 " + idb,                   // IS_DOMAIN_INTRODUCED
          "18 " + idb,                   // RESUME
          "19 " + ida + " " + idb,       // SET_TARGET
          "24 " + ida + " 1",            // SET_FEATURE
          "25 " + ida + " nodes",        // GET_QUOTA
          "26 " + ida + " nodes 100000", // SET_QUOTA
          std::string("0 check")}) {     // CONTROL
        INFO(m);
        CHECK(a.cmd("xsraw " + m) == kEacces);
    }
    CHECK(raw(dom0, xs::MsgType::XS_IS_DOMAIN_INTRODUCED, {idb}) == "T ");
    CHECK(raw(dom0, xs::MsgType::XS_GET_QUOTA, {ida, "nodes"}) ==
          raw(dom0, xs::MsgType::XS_GET_QUOTA, {"nodes"}));
    // b was not harmed: its node and its connection work.
    CHECK(b.cmd("xsread data/secret") == "ok b");
}

TEST_CASE("a dom0 watch on @introduceDomain fires when hv-min creates a domain, an unprivileged "
          "one only once granted read",
          "[hvmin][domain][xenstore][issue-3]") {
    Harness h;
    auto x0 = dom0_store(h);
    auto& dom0 = *x0;
    Puppet a(h, "watcher");
    REQUIRE(dom0.watch("@introduceDomain", "intro"));
    auto first = dom0.wait_event(5000ms);  // the initial event
    REQUIRE(first);
    CHECK(first->path == "@introduceDomain");
    REQUIRE(a.cmd("xswatch @introduceDomain intro") == "ok");
    CHECK(a.cmd("xsevent 5000") == "ok @introduceDomain intro");
    REQUIRE(a.cmd("xswatch data mine") == "ok");
    CHECK(a.cmd("xsevent 5000") == "ok data mine");

    Puppet b(h, "newcomer");
    auto ev = dom0.wait_event(5000ms);
    REQUIRE(ev);
    CHECK(ev->path == "@introduceDomain");
    CHECK(ev->token == "intro");
    CHECK(raw(dom0, xs::MsgType::XS_IS_DOMAIN_INTRODUCED, {std::to_string(b.domid.get())}) ==
          "T ");
    // a may not see it: its next event is the one dom0 causes in its home afterwards.
    REQUIRE(dom0.write(home_of(a.domid) + "/data/ping", "1"));
    CHECK(a.cmd("xsevent 5000") == "ok data/ping mine");

    // Granted read on @introduceDomain, a sees the next creation.
    REQUIRE(dom0.set_perms("@introduceDomain",
                           {xs::Permission{DomId(0), xs::Access::none},
                            xs::Permission{a.domid, xs::Access::read}}));
    Puppet c(h, "third");
    CHECK(a.cmd("xsevent 5000") == "ok @introduceDomain intro");
    auto ev2 = dom0.wait_event(5000ms);
    REQUIRE(ev2);
    CHECK(ev2->path == "@introduceDomain");

    // The release side: a domain's exit fires @releaseDomain and it is no longer introduced.
    REQUIRE(dom0.watch("@releaseDomain", "rel"));
    REQUIRE(dom0.wait_event(5000ms));  // the initial event
    c.cmd("exit 0");
    auto rel = dom0.wait_event(5000ms);
    REQUIRE(rel);
    CHECK(rel->path == "@releaseDomain");
    CHECK(raw(dom0, xs::MsgType::XS_IS_DOMAIN_INTRODUCED, {std::to_string(c.domid.get())}) ==
          "F ");
}
#endif

TEST_CASE("a cloned channel serves the same domain", "[hvmin][domain]") {
    Harness h;
    auto c = h.dom0().clone();
    REQUIRE(c);
    CHECK(c->domid() == DomId(0));
    CHECK(c->privileged());
    auto b = c->evtchn().alloc_unbound(DomId(0));
    REQUIRE(b);
    auto s = h.dom0().evtchn().status(DomId(rings::DOMID_SELF), b->port());
    REQUIRE(s);
    CHECK(s->status == rings::EVTCHNSTAT_unbound);
}

TEST_CASE("a domain's program gets only its configured environment and the hypercall fd",
          "[hvmin][domain]") {
    Harness h;
    ::setenv("HVMIN_TEST_LEAK", "1", 1);
    const std::string path = (h.dir / "envguest.ctl").string();
    // Puppet builds its own config; here the env matters, so create it by hand.
    UniqueFd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    REQUIRE(::bind(l.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(l.get(), 1) == 0);
    DomainConfig c;
    c.name = "envguest";
    c.memory_pages = 4;
    c.argv = {HVMIN_TEST_GUEST, path};
    c.env = {"GREETING=hello"};
    auto d = h.ts->create(c);
    REQUIRE(d);
    pollfd p{l.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    UniqueFd conn(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(conn.valid());
    auto ask = [&](const std::string& line) {
        const std::string msg = line + "\n";
        REQUIRE(::send(conn.get(), msg.data(), msg.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(msg.size()));
        std::string out;
        char ch = 0;
        while (::poll(&p, 1, 5000) >= 0 && ::read(conn.get(), &ch, 1) == 1 && ch != '\n') {
            out.push_back(ch);
        }
        return out;
    };
    p = pollfd{conn.get(), POLLIN, 0};
    CHECK(ask("getenv GREETING") == "ok hello");
    CHECK(ask("getenv HVMIN_TEST_LEAK") == "err unset");
    CHECK(ask("getenv HV_HYPERCALL_FD") == "err unset");  // consumed by attach()
    ::unsetenv("HVMIN_TEST_LEAK");
}

TEST_CASE("a non-root process is refused on the control socket", "[hvmin][domain][hostile]") {
    hv::test::require_root();  // it switches a child to uid 65534
    Harness h;
    const std::string sock = h.core->socket_path().string();
    // Open the file mode so that SO_PEERCRED, not the mode, is what refuses the peer.
    REQUIRE(::chmod(sock.c_str(), 0666) == 0);
    REQUIRE(::chmod(h.dir.str().c_str(), 0711) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The child only makes syscalls, then _exits: safe after fork in a threaded process.
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
            ::_exit(10);
        }
        const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", sock.c_str());
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::_exit(13);
        }
        wire::Header hd{wire::kMagic, static_cast<std::uint16_t>(wire::Op::domain_list), 0, 0, 1};
        (void)::send(fd, &hd, sizeof hd, MSG_NOSIGNAL);
        pollfd pf{fd, POLLIN, 0};
        if (::poll(&pf, 1, 5000) != 1) {
            ::_exit(11);
        }
        char b[64];
        const ssize_t n = ::recv(fd, b, sizeof b, 0);
        ::_exit(n <= 0 ? 0 : 12);  // EOF or reset: refused; a reply would be a hole
    }
    int st = 0;
    REQUIRE(::waitpid(child, &st, 0) == child);
    REQUIRE(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    CHECK(h.ts->list());
}

namespace {
std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        ++n;
    }
    return n;
}
}  // namespace

TEST_CASE("a domain with grants, ports, an extent, clones and XenStore leaves no fd behind when "
          "it and its backend connection are gone",
          "[hvmin][domain][issue-2]") {
    Harness h;
    // hv-min runs in this process: its fds and ours are counted together, so the count is
    // taken with only the harness (core + toolstack connection) open, and again at the end.
    REQUIRE(h.dom0().evtchn().status(DomId(0), EvtchnPort(1)));  // settle lazy set-up
    const std::size_t before = open_fds();
    {
        auto backend = Services::connect_dom0(h.dir.path());  // a backend's own connection
        REQUIRE(backend);
        auto worker = backend->clone();  // its per-ring worker channel
        REQUIRE(worker);
        Puppet g(h, "devices", PuppetOptions{64, true});
        // The frontend grants a page; the backend maps it (trusted: gets the extent's fd).
        const long ref = g.num("grant 0 3 0");
        auto m = worker->grants().map(g.domid, GrantRef(static_cast<std::uint32_t>(ref)), false);
        REQUIRE(m);
        // An event channel as a backend makes it: unbound for the frontend, which binds it.
        auto port = backend->evtchn().alloc_unbound(g.domid);
        REQUIRE(port);
        REQUIRE(g.num("bind 0 " + std::to_string(port->port().get())) > 0);
        // A copy-mode buffer of the backend, and the frontend's own second extent.
        REQUIRE(backend->memory().alloc_extent(4));
        REQUIRE(g.cmd("extent 1").rfind("ok", 0) == 0);
#ifdef HVMIN_TEST_HAVE_XENSTORE
        CHECK(g.cmd("xswrite data/x 1") == "ok");
#endif
        // The frontend also maps one of the backend's grants (a pin on dom0's table).
        auto bref = backend->grants().grant_access(g.domid, 0, false);
        REQUIRE(bref);
        CHECK(g.cmd("map 0 " + std::to_string(bref->get()) + " 0").rfind("ok", 0) == 0);
        CHECK(open_fds() > before);
        REQUIRE(h.ts->destroy(g.domid));
        auto d = h.ts->wait_for_death(g.domid, 5000ms);
        REQUIRE(d);
        CHECK(d->reason == wire::DeathReason::destroyed);
    }  // the backend's mapping, port, extent, clone and connection close here
    // hv-min sees the backend's connections hang up asynchronously: wait (bounded) for it.
    std::size_t after = open_fds();
    for (int i = 0; i < 500 && after != before; ++i) {
        std::this_thread::sleep_for(10ms);
        after = open_fds();
    }
    CHECK(after == before);
}

TEST_CASE("a program that closes its hypercall socket and then exits reports its own status",
          "[hvmin][domain][issue-2]") {
    Harness h;
    Puppet p(h, "leaver");
    // The socket goes first (as when main returns and Services is destroyed), the exit 150 ms
    // later: the domain is dead at once, but its death says "exited 9", not "disconnected".
    CHECK(p.cmd("hangup 9 150").empty());
    auto d = h.ts->wait_for_death(p.domid, 5000ms);
    REQUIRE(d);
    CHECK(d->reason == wire::DeathReason::exited);
    CHECK(d->status == 9);
}

TEST_CASE("a program that closes its hypercall socket but keeps running is killed after the "
          "exit grace and reported disconnected",
          "[hvmin][domain][issue-2]") {
    CoreConfig cfg;
    cfg.exit_grace_ms = 200;
    Harness h(cfg);
    Puppet p(h, "lingerer");
    auto l = h.ts->list();
    REQUIRE(l);
    pid_t pid = -1;
    for (const auto& s : *l) {
        if (s.domid == p.domid) {
            pid = s.pid;
        }
    }
    REQUIRE(pid > 0);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(p.cmd("hangup -1 0") == "ok");
    auto d = h.ts->wait_for_death(p.domid, 5000ms);
    REQUIRE(d);
    CHECK(d->reason == wire::DeathReason::disconnected);
    CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
    CHECK(::kill(pid, 0) != 0);  // reaped
}
