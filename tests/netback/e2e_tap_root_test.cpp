// netback end to end with tap vifs in a private network namespace (root): the host side is made
// at probe as Linux netback makes its vif (tap, MAC, MTU, bridge, up, then hotplug-status),
// before any frontend; a vif whose bridge does not exist reports it in hotplug-error and never
// reaches Connected while the other vifs of the same netback connect.
#include <net/if.h>

#include <catch2/catch.hpp>

#include <thread>

#include "e2e_harness.hpp"
#include "netback/netlink.hpp"
#include "netback/tap.hpp"
#include "netns.hpp"
#include "skip.hpp"

namespace hv::net::test {

TEST_CASE("a vif's tap is made, bridged and up before its frontend connects, and a vif whose "
          "bridge is missing stays in InitWait with hotplug-error while the other connects",
          "[netback][e2e][hotplug][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create("hvt");
    REQUIRE(ns);
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl);
    REQUIRE(nl->create_bridge("br0"));
    REQUIRE(nl->set_up("br0", true));
    BackendOptions o = Env::loop_options();
    o.host = HostMode::tap;
    o.netns_fd = ns->fd();
    Env env(o);
    Guest g(env, "g1");
    Vif good(env, g, 0, {}, {{"bridge", "br0"}, {"mtu", "1400"}}, /*connect=*/false);
    Vif bad(env, g, 1, {}, {{"bridge", "nosuchbr"}}, /*connect=*/false);
    REQUIRE(good.wait_backend(XenbusState::XenbusStateInitWait));
    REQUIRE(good.wait_backend_key("hotplug-status", "connected"));
    // No frontend yet (its dir has no state beyond Initialising): the tap is there already.
    const std::string name = vif_name(g.domid, 0);
    auto br = nl->link_index("br0");
    REQUIRE(br);
    auto l = nl->get_link(name);
    REQUIRE(l);
    CHECK(l->kind == "tun");
    CHECK(l->master == *br);
    CHECK(l->up());
    CHECK(l->mtu == 1400);
    CHECK(l->mac == Mac{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff});
    CHECK(good.backend_key("state") == "2");

    REQUIRE(bad.wait_backend(XenbusState::XenbusStateInitWait));
    REQUIRE(bad.wait_backend_key("hotplug-status", "error"));
    const std::string why = bad.backend_key("hotplug-error");
    INFO(why);
    CHECK(why.starts_with("host side: bridge nosuchbr: "));
    CHECK_FALSE(nl->get_link(vif_name(g.domid, 1)));  // what was made is taken away again

    good.connect();
    CHECK(good.backend_key("state") == "4");
    bad.start_frontend();  // the frontend is Connected
    CHECK_FALSE(bad.wait_backend(XenbusState::XenbusStateConnected, 1s));
    CHECK(bad.backend_key("state") == "2");
    CHECK(bad.backend_key("hotplug-status") == "error");

    // A reconnect keeps the tap (Linux keeps the vif until the device is removed); removal
    // takes it away.
    REQUIRE(xenbus::switch_state(*g.xs, good.fdir(), XenbusState::XenbusStateClosing));
    REQUIRE(good.wait_backend(XenbusState::XenbusStateClosing));
    CHECK(nl->get_link(name));
    REQUIRE(xenbus::remove_device(*env.xs, DomId(0), "vif", g.domid, 0));
    bool gone = false;
    for (int i = 0; i < 500 && !gone; ++i) {
        gone = !nl->get_link(name);
        if (!gone) {
            std::this_thread::sleep_for(10ms);  // polled: netlink has no wait for a removal here
        }
    }
    CHECK(gone);
}

}  // namespace hv::net::test
