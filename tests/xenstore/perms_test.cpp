// Permissions (xen-abi.md §4.5) with unprivileged domain connections made through
// Server::add_connection, as hv-min makes them.
#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

TEST_CASE("an unprivileged domain cannot read, write or list what its permissions deny",
          "[xenstore][perms]") {
    Harness h;
    h.make_domain_home(3);
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/secret/key", "s")));  // n0: nobody but dom0
    RawConn d = h.domain(3);
    CHECK(d.read("/secret/key").is_error("EACCES"));
    CHECK(d.dir("/secret").is_error("EACCES"));
    CHECK(d.get_perms("/secret").is_error("EACCES"));
    CHECK(d.write("/secret/key", "mine").is_error("EACCES"));
    CHECK(d.write("/secret/new", "mine").is_error("EACCES"));
    CHECK(d.mkdir("/secret/new").is_error("EACCES"));
    CHECK(d.rm("/secret/key").is_error("EACCES"));
    CHECK(d.set_perms("/secret/key", {"b3"}).is_error("EACCES"));
    // A missing node below an unreadable one does not reveal whether it exists.
    CHECK(d.read("/secret/missing").is_error("EACCES"));
    CHECK(c.read("/secret/key").payload == "s");
}

TEST_CASE("read, write and both grants are honoured per domain, first match wins",
          "[xenstore][perms]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/shared", "v")));
    REQUIRE(ok(c.set_perms("/shared", {"n0", "r3", "w4", "b5", "n5"})));
    RawConn d3 = h.domain(3), d4 = h.domain(4), d5 = h.domain(5), d6 = h.domain(6);
    CHECK(d3.read("/shared").payload == "v");
    CHECK(d3.write("/shared", "x").is_error("EACCES"));
    CHECK(d4.read("/shared").is_error("EACCES"));
    CHECK(ok(d4.write("/shared", "four")));
    CHECK(d5.read("/shared").payload == "four");
    CHECK(ok(d5.write("/shared", "five")));
    CHECK(d6.read("/shared").is_error("EACCES"));
    // The default (first entry) applies to unlisted domains.
    REQUIRE(ok(c.set_perms("/shared", {"r0"})));
    CHECK(d6.read("/shared").payload == "five");
    CHECK(d6.write("/shared", "six").is_error("EACCES"));
}

TEST_CASE("the owner has full access and a created node is owned by its unprivileged creator",
          "[xenstore][perms]") {
    Harness h;
    h.make_domain_home(3);
    RawConn d = h.domain(3);
    CHECK(ok(d.write("data/x", "1")));
    CHECK(d.get_perms("data/x").payload == nul_join({"n3"}));
    RawConn c = h.dom0();
    REQUIRE(ok(c.mkdir("/pub")));
    REQUIRE(ok(c.set_perms("/pub", {"n0", "w3"})));
    CHECK(ok(d.write("/pub/mine", "m")));  // w on the parent lets it create
    CHECK(c.get_perms("/pub/mine").payload == nul_join({"n3", "w3"}));
    CHECK(d.read("/pub/mine").payload == "m");  // owner reads although the list says w
    // A node dom0 creates inherits the parent's list unchanged.
    REQUIRE(ok(c.write("/pub/dom0s", "")));
    CHECK(c.get_perms("/pub/dom0s").payload == nul_join({"n0", "w3"}));
}

TEST_CASE("an unprivileged domain cannot change a node's owner but can change its grants",
          "[xenstore][perms]") {
    Harness h;
    h.make_domain_home(3);
    RawConn d = h.domain(3);
    REQUIRE(ok(d.write("mine", "")));
    CHECK(d.set_perms("mine", {"n4"}).is_error("EPERM"));
    CHECK(ok(d.set_perms("mine", {"n3", "r4"})));
    CHECK(d.get_perms("mine").payload == nul_join({"n3", "r4"}));
    // Write access alone does not make a domain the owner: it may not set permissions.
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/w", "")));
    REQUIRE(ok(c.set_perms("/w", {"n0", "b3"})));
    CHECK(d.set_perms("/w", {"n0", "b3", "r4"}).is_error("EACCES"));
    // dom0 may hand a node to a domain.
    CHECK(ok(c.set_perms("/w", {"n3"})));
    CHECK(ok(d.set_perms("/w", {"b3"})));
}

TEST_CASE("an unprivileged domain cannot issue privileged messages", "[xenstore][perms]") {
    Harness h;
    RawConn d = h.domain(3);
    struct Case {
        MsgType t;
        std::string payload;
    };
    const Case cases[] = {
        {MsgType::XS_INTRODUCE, nul_join({"9", "1", "1"})},
        {MsgType::XS_RELEASE, nul_join({"9"})},
        {MsgType::XS_IS_DOMAIN_INTRODUCED, nul_join({"0"})},
        {MsgType::XS_RESUME, nul_join({"3"})},
        {MsgType::XS_SET_TARGET, nul_join({"3", "0"})},
        {MsgType::XS_SET_FEATURE, nul_join({"3", "0"})},
        {MsgType::XS_GET_QUOTA, nul_join({"nodes"})},
        {MsgType::XS_SET_QUOTA, nul_join({"nodes", "100000"})},
        {MsgType::XS_CONTROL, nul_join({"check"})},
    };
    for (const auto& k : cases) {
        INFO(static_cast<unsigned>(k.t));
        CHECK(d.call(k.t, k.payload).is_error("EACCES"));
    }
    CHECK_FALSE(h.server().is_introduced(hv::DomId{9}));
    // Unprivileged but harmless messages work.
    CHECK(d.call(MsgType::XS_GET_DOMAIN_PATH, nul_join({"3"})).payload ==
          "/local/domain/3"s + '\0');
    CHECK(d.call(MsgType::XS_GET_FEATURE, "").type == MsgType::XS_GET_FEATURE);
}

TEST_CASE("special watch nodes need a grant before an unprivileged domain sees them",
          "[xenstore][perms]") {
    Harness h;
    RawConn d = h.domain(3);
    CHECK(d.get_perms("@releaseDomain").is_error("EACCES"));
    CHECK(d.set_perms("@releaseDomain", {"r3"}).is_error("EACCES"));
    RawConn c = h.dom0();
    CHECK(ok(c.set_perms("@releaseDomain", {"n0", "r3"})));
    CHECK(d.get_perms("@releaseDomain").payload == nul_join({"n0", "r3"}));
}

TEST_CASE("set_target lets a domain act with its target's permissions", "[xenstore][perms]") {
    Harness h;
    h.make_domain_home(5);
    RawConn c = h.dom0();
    REQUIRE(h.server().introduce_domain(hv::DomId{6}).has_value());
    REQUIRE(ok(c.write("/local/domain/5/x", "five")));
    REQUIRE(ok(c.set_perms("/local/domain/5/x", {"n5"})));
    RawConn dm = h.domain(6);
    CHECK(dm.read("/local/domain/5/x").is_error("EACCES"));
    REQUIRE(ok(c.call(MsgType::XS_SET_TARGET, nul_join({"6", "5"}))));
    CHECK(dm.read("/local/domain/5/x").payload == "five");
}

TEST_CASE("a domain's identity is fixed by its connection", "[xenstore][perms]") {
    Harness h;
    h.make_domain_home(3);
    h.make_domain_home(4);
    RawConn d3 = h.domain(3);
    // Relative paths are always the connection's own home; another home is just a path
    // whose permissions apply.
    REQUIRE(ok(d3.write("x", "3")));
    CHECK(d3.write("/local/domain/4/x", "spoof").is_error("EACCES"));
    CHECK(d3.read("/local/domain/4").is_error("EACCES"));
    CHECK_FALSE(h.server().add_connection(hv::UniqueFd(), hv::DomId{3}).has_value());
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ::close(sv[1]);
    CHECK_FALSE(h.server().add_connection(hv::UniqueFd(sv[0]), hv::DomId{0x7ff0}).has_value());
}

TEST_CASE("an unprivileged domain watching a denied node learns nothing after the initial event",
          "[xenstore][perms]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/private/k", "0")));
    RawConn d = h.domain(3);
    REQUIRE(ok(d.watch("/private", "spy")));
    REQUIRE(d.event());  // the registration event names only the watched path
    for (int i = 0; i < 5; ++i) {
        REQUIRE(ok(c.write("/private/k", std::to_string(i))));
    }
    REQUIRE(ok(c.rm("/private/k")));
    CHECK(d.no_event());
    CHECK(d.read("/private/k").is_error("EACCES"));
}

TEST_CASE("a released domain's rights go with it: entries naming it are dropped and what it "
          "owned passes to dom0",
          "[xenstore][perms]") {
    Harness h;
    h.make_domain_home(3);
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/reg/a", "v")));
    REQUIRE(ok(c.set_perms("/reg/a", {"n0", "r3", "w4"})));
    REQUIRE(ok(c.mkdir("/pub")));
    REQUIRE(ok(c.set_perms("/pub", {"n0", "w3"})));
    REQUIRE(ok(c.set_perms("@releaseDomain", {"n0", "r3"})));
    {
        RawConn d = h.domain(3);
        REQUIRE(ok(d.write("/pub/mine", "m")));
        REQUIRE(c.get_perms("/pub/mine").payload == nul_join({"n3", "w3"}));
        REQUIRE(d.read("/reg/a").payload == "v");
    }
    // A transaction that read a node whose list changes does not commit the old list back.
    const std::uint32_t t = c.tx_start();
    REQUIRE(c.read("/reg/a", t).payload == "v");
    REQUIRE(ok(c.write("/reg/a", "w", t)));
    REQUIRE(h.server().release_domain(hv::DomId{3}).has_value());
    CHECK(c.tx_end(t, true).is_error("EAGAIN"));

    CHECK(c.get_perms("/reg/a").payload == nul_join({"n0", "w4"}));
    CHECK(c.get_perms("/pub").payload == nul_join({"n0"}));
    CHECK(c.get_perms("/pub/mine").payload == nul_join({"n0"}));
    CHECK(c.get_perms("@releaseDomain").payload == nul_join({"n0"}));
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));  // quota usage moved too
    // A new domain with the same id inherits none of it.
    REQUIRE(h.server().introduce_domain(hv::DomId{3}).has_value());
    RawConn again = h.domain(3);
    CHECK(again.read("/reg/a").is_error("EACCES"));
    CHECK(again.read("/pub/mine").is_error("EACCES"));
    CHECK(again.write("/pub/new", "x").is_error("EACCES"));
    CHECK(again.get_perms("@releaseDomain").is_error("EACCES"));
}
