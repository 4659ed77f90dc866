// Rtnetlink operations inside a private namespace, checked by reading the links back (and with
// `ip` for addresses).
#include <catch2/catch.hpp>

#include <net/if.h>

#include "frames.hpp"
#include "netback/netlink.hpp"
#include "netns.hpp"
#include "skip.hpp"

using hv::net::Netlink;

TEST_CASE("a bridge is created, configured and deleted over rtnetlink", "[netback][netlink][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    REQUIRE(nl->create_bridge("xenbr0").has_value());
    auto li = nl->get_link("xenbr0");
    REQUIRE(li.has_value());
    CHECK(li->kind == "bridge");
    CHECK_FALSE(li->up());
    REQUIRE(nl->set_up("xenbr0", true).has_value());
    REQUIRE(nl->set_mtu("xenbr0", 1400).has_value());
    const hv::net::Mac mac{0x02, 0x11, 0x22, 0x33, 0x44, 0x55};
    REQUIRE(nl->set_mac("xenbr0", mac).has_value());
    li = nl->get_link("xenbr0");
    REQUIRE(li.has_value());
    CHECK(li->up());
    CHECK(li->mtu == 1400);
    CHECK(li->mac == mac);
    REQUIRE(nl->set_up("xenbr0", false).has_value());
    CHECK_FALSE(nl->get_link("xenbr0")->up());

    auto again = nl->create_bridge("xenbr0");
    REQUIRE_FALSE(again.has_value());
    CHECK(again.error() == std::errc::file_exists);
    REQUIRE(nl->delete_link("xenbr0").has_value());
    CHECK(nl->get_link("xenbr0").error() == std::errc::no_such_device);
}

TEST_CASE("a veth joins and leaves a bridge and moves to another namespace",
          "[netback][netlink][root]") {
    hv::test::require_root();
    auto a = hv::test::NetNs::create();
    auto b = hv::test::NetNs::create();
    REQUIRE(a.has_value());
    REQUIRE(b.has_value());
    auto nl = Netlink::open(a->fd());
    REQUIRE(nl.has_value());
    REQUIRE(nl->create_bridge("br0").has_value());
    REQUIRE(nl->create_veth("v0", "v1").has_value());
    CHECK(nl->get_link("v1")->kind == "veth");
    REQUIRE(nl->set_master("v0", "br0").has_value());
    CHECK(nl->get_link("v0")->master == *nl->link_index("br0"));
    REQUIRE(nl->set_master("v0", "").has_value());
    CHECK(nl->get_link("v0")->master == 0);

    REQUIRE(nl->move_to_netns("v1", b->fd()).has_value());
    CHECK(nl->get_link("v1").error() == std::errc::no_such_device);
    auto nlb = Netlink::open(b->fd());
    REQUIRE(nlb.has_value());
    REQUIRE(nlb->get_link("v1").has_value());
    REQUIRE(nlb->add_address_v4("v1", hv::test::net::ip4("10.9.0.2"), 24).has_value());
    auto dup = nlb->add_address_v4("v1", hv::test::net::ip4("10.9.0.2"), 24);
    REQUIRE_FALSE(dup.has_value());
    CHECK(dup.error() == std::errc::file_exists);
    auto out = b->exec({"ip", "-o", "-4", "addr", "show", "dev", "v1"});
    REQUIRE(out.has_value());
    CHECK(out->output.find("10.9.0.2/24") != std::string::npos);
}

TEST_CASE("rtnetlink requests with bad arguments fail without touching anything",
          "[netback][netlink][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl.has_value());
    CHECK(nl->create_bridge("").error() == std::errc::invalid_argument);
    CHECK(nl->create_bridge("a-name-much-too-long").error() == std::errc::invalid_argument);
    CHECK(nl->set_up("nosuch0", true).error() == std::errc::no_such_device);
    CHECK(nl->set_master("lo", "nosuch0").error() == std::errc::no_such_device);
    CHECK(nl->move_to_netns("lo", -1).error() == std::errc::bad_file_descriptor);
    CHECK(nl->add_address_v4("lo", hv::test::net::ip4("10.1.1.1"), 33).error() ==
          std::errc::invalid_argument);
    CHECK(nl->delete_link("nosuch0").error() == std::errc::no_such_device);
}
