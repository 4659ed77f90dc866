// Watch semantics (xen-abi.md §4.6): initial event, subtree matching, depth, removal,
// transaction queueing, permission filtering, @introduceDomain/@releaseDomain.
#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

using Ev = std::pair<std::string, std::string>;

TEST_CASE("a watch replies OK first and then fires once at once, even on a missing node",
          "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(c.send(MsgType::XS_WATCH, nul_join({"/not/there", "tok"}), 0, 5));
    auto first = c.recv();
    REQUIRE(first);
    CHECK(first->type == MsgType::XS_WATCH);
    CHECK(first->req_id == 5);
    CHECK(first->payload == "OK"s + '\0');
    auto second = c.recv();
    REQUIRE(second);
    CHECK(second->type == MsgType::XS_WATCH_EVENT);
    CHECK(second->req_id == 0);
    CHECK(second->tx_id == 0);
    CHECK(second->payload == nul_join({"/not/there", "tok"}));
    CHECK(c.no_event());
}

TEST_CASE("a watch matches its node and every descendant but not a sibling prefix",
          "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    RawConn w = h.dom0();
    REQUIRE(ok(w.watch("/a", "t")));
    REQUIRE(w.event() == Ev{"/a", "t"});
    REQUIRE(ok(c.write("/a", "1")));
    CHECK(w.event() == Ev{"/a", "t"});
    REQUIRE(ok(c.write("/a/b/c", "1")));
    CHECK(w.event() == Ev{"/a/b/c", "t"});  // the modified path, not the watch path
    REQUIRE(ok(c.write("/ab", "1")));
    REQUIRE(ok(c.write("/a/b/c", "1")));  // same value still fires
    CHECK(w.event() == Ev{"/a/b/c", "t"});
    REQUIRE(ok(c.set_perms("/a/b", {"n0", "r1"})));
    CHECK(w.event() == Ev{"/a/b", "t"});
    REQUIRE(ok(c.mkdir("/a/new")));
    CHECK(w.event() == Ev{"/a/new", "t"});
    REQUIRE(ok(c.mkdir("/a/new")));  // existing: no change, no event
    CHECK(w.no_event());
}

TEST_CASE("a watch on / sees everything", "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.watch("/", "root")));
    REQUIRE(c.event() == Ev{"/", "root"});
    REQUIRE(ok(c.write("/x/y", "1")));
    CHECK(c.event() == Ev{"/x/y", "root"});
}

TEST_CASE("watch depth limits how far below the node events come from", "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.call(MsgType::XS_WATCH, nul_join({"/d", "zero", "0"}))));
    REQUIRE(ok(c.call(MsgType::XS_WATCH, nul_join({"/d", "one", "1"}))));
    REQUIRE(c.event() == Ev{"/d", "zero"});
    REQUIRE(c.event() == Ev{"/d", "one"});
    REQUIRE(ok(c.write("/d", "")));
    CHECK(c.event() == Ev{"/d", "zero"});
    CHECK(c.event() == Ev{"/d", "one"});
    REQUIRE(ok(c.write("/d/e", "")));
    CHECK(c.event() == Ev{"/d/e", "one"});
    REQUIRE(ok(c.write("/d/e/f", "")));
    CHECK(c.no_event());
    CHECK(c.call(MsgType::XS_WATCH, nul_join({"/d", "neg", "-1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_WATCH, nul_join({"/d", "nan", "x"})).is_error("EINVAL"));
}

TEST_CASE("removing a subtree fires the root as a subtree match and descendants exactly",
          "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/r/a/b", "1")));
    RawConn w = h.dom0();
    REQUIRE(ok(w.watch("/r", "anc")));
    REQUIRE(ok(w.watch("/r/a/b", "leaf")));
    REQUIRE(ok(w.watch("/r/a/b/never", "ghost")));
    REQUIRE(w.event());
    REQUIRE(w.event());
    REQUIRE(w.event());
    REQUIRE(ok(c.rm("/r/a")));
    std::vector<Ev> got;
    while (auto e = w.event(300)) {
        got.push_back(*e);
    }
    CHECK(got == std::vector<Ev>{{"/r/a", "anc"}, {"/r/a/b", "leaf"}});
}

TEST_CASE("a relative watch gets relative event paths", "[xenstore][watch]") {
    Harness h;
    h.make_domain_home(4);
    RawConn d = h.domain(4);
    REQUIRE(ok(d.watch("device", "rel")));
    REQUIRE(d.event() == Ev{"device", "rel"});
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/local/domain/4/device/vif/0/state", "1")));
    CHECK(d.event() == Ev{"device/vif/0/state", "rel"});
}

TEST_CASE("duplicate watches are EEXIST and unwatch removes exactly one", "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.watch("/u", "a")));
    CHECK(c.watch("/u", "a").is_error("EEXIST"));
    REQUIRE(ok(c.watch("/u", "b")));
    REQUIRE(c.event());
    REQUIRE(c.event());
    CHECK(ok(c.unwatch("/u", "a")));
    CHECK(c.unwatch("/u", "a").is_error("ENOENT"));
    CHECK(c.unwatch("/u", "zzz").is_error("ENOENT"));
    CHECK(c.call(MsgType::XS_UNWATCH, nul_join({"/u"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_WATCH, nul_join({"/u"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_WATCH, nul_join({"/u//x", "t"})).is_error("EINVAL"));
    REQUIRE(ok(c.write("/u", "1")));
    CHECK(c.event() == Ev{"/u", "b"});
    CHECK(c.no_event());
}

TEST_CASE("events of a transaction wait for its commit and vanish with an abort",
          "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    RawConn w = h.dom0();
    REQUIRE(ok(w.watch("/tx", "t")));
    REQUIRE(w.event());
    const std::uint32_t t = c.tx_start();
    REQUIRE(ok(c.write("/tx/a", "1", t)));
    REQUIRE(ok(c.write("/tx/b", "1", t)));
    CHECK(w.no_event());
    REQUIRE(ok(c.tx_end(t, true)));
    std::vector<Ev> got{*w.event(), *w.event()};
    CHECK(got == std::vector<Ev>{{"/tx/a", "t"}, {"/tx/b", "t"}});
    const std::uint32_t t2 = c.tx_start();
    REQUIRE(ok(c.write("/tx/c", "1", t2)));
    REQUIRE(ok(c.tx_end(t2, false)));
    CHECK(w.no_event());
}

TEST_CASE("events are only delivered to watchers that may read the node", "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.mkdir("/f")));
    REQUIRE(ok(c.set_perms("/f", {"n0", "r3"})));
    RawConn d3 = h.domain(3), d4 = h.domain(4);
    REQUIRE(ok(d3.watch("/f", "t")));
    REQUIRE(ok(d4.watch("/f", "t")));  // allowed to watch; the initial event still comes
    REQUIRE(d3.event());
    REQUIRE(d4.event());
    REQUIRE(ok(c.write("/f/x", "1")));
    CHECK(d3.event() == Ev{"/f/x", "t"});
    CHECK(d4.no_event());
    // A node d3 cannot read still fires for it while its parent is readable (it may see that
    // the node changed, not what it holds)...
    REQUIRE(ok(c.write("/f/private", "1")));
    REQUIRE(ok(c.set_perms("/f/private", {"n0"})));
    CHECK(d3.event() == Ev{"/f/private", "t"});
    CHECK(d3.event() == Ev{"/f/private", "t"});
    REQUIRE(ok(c.write("/f/private", "2")));
    CHECK(d3.event() == Ev{"/f/private", "t"});
    CHECK(d4.no_event());
    // ...but not when neither the node nor its parent is readable.
    REQUIRE(ok(c.write("/f/private/deeper", "1")));
    REQUIRE(ok(c.rm("/f/private/deeper")));
    CHECK(d3.no_event());
    CHECK(d3.read("/f/private").is_error("EACCES"));
}

TEST_CASE("@introduceDomain and @releaseDomain fire for privileged watchers",
          "[xenstore][watch]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.watch("@introduceDomain", "in")));
    REQUIRE(ok(c.watch("@releaseDomain", "out")));
    REQUIRE(ok(c.call(MsgType::XS_WATCH, nul_join({"@releaseDomain", "deep", "1"}))));
    REQUIRE(ok(c.watch("@releaseDomain/9", "nine")));
    REQUIRE(ok(c.watch("@releaseDomain/8", "eight")));
    for (int i = 0; i < 5; ++i) {
        REQUIRE(c.event());
    }
    REQUIRE(h.server().introduce_domain(hv::DomId{9}).has_value());
    CHECK(c.event() == Ev{"@introduceDomain", "in"});
    REQUIRE(h.server().introduce_domain(hv::DomId{9}).has_value());  // idempotent
    CHECK(c.no_event());
    REQUIRE(ok(c.call(MsgType::XS_INTRODUCE, nul_join({"10", "1", "1"}))));
    CHECK(c.event() == Ev{"@introduceDomain", "in"});
    REQUIRE(h.server().release_domain(hv::DomId{9}).has_value());
    std::vector<Ev> got;
    while (auto e = c.event(300)) {
        got.push_back(*e);
    }
    CHECK(got == std::vector<Ev>{{"@releaseDomain", "out"},
                                 {"@releaseDomain/9", "deep"},
                                 {"@releaseDomain/9", "nine"}});
    CHECK(h.server().release_domain(hv::DomId{9}).error() ==
          std::error_code(ENOENT, std::system_category()));
}

TEST_CASE("an unprivileged domain receives @releaseDomain only once granted",
          "[xenstore][watch]") {
    Harness h;
    RawConn d = h.domain(3);
    REQUIRE(ok(d.watch("@releaseDomain", "r")));
    REQUIRE(d.event());
    REQUIRE(h.server().introduce_domain(hv::DomId{7}).has_value());
    REQUIRE(h.server().release_domain(hv::DomId{7}).has_value());
    CHECK(d.no_event());
    RawConn c = h.dom0();
    REQUIRE(ok(c.set_perms("@releaseDomain", {"n0", "r3"})));
    REQUIRE(h.server().introduce_domain(hv::DomId{7}).has_value());
    REQUIRE(h.server().release_domain(hv::DomId{7}).has_value());
    CHECK(d.event() == Ev{"@releaseDomain", "r"});
}

TEST_CASE("releasing a domain closes its connections and drops its watches",
          "[xenstore][watch]") {
    Harness h;
    h.make_domain_home(6);
    RawConn d = h.domain(6);
    REQUIRE(ok(d.watch("/local", "w")));
    REQUIRE(d.event());
    const std::uint32_t t = d.tx_start();
    (void)t;
    const std::size_t before = h.server().connection_count();
    REQUIRE(h.server().release_domain(hv::DomId{6}).has_value());
    CHECK(d.closed_by_server());
    CHECK(h.server().connection_count() < before);
    CHECK_FALSE(h.server().is_introduced(hv::DomId{6}));
    RawConn c = h.dom0();
    CHECK(ok(c.write("/local/x", "still fine")));
}
