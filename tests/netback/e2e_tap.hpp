// Tap vifs in the netback e2e harness (root): a private namespace with a bridge, and the
// harness's backend making its vifs' taps there.
#pragma once

#include <catch2/catch.hpp>

#include "e2e_harness.hpp"
#include "netback/netlink.hpp"
#include "netns.hpp"

namespace hv::net::test {

/// A private namespace with a Linux bridge br0, up, and its rtnetlink socket.
struct SwitchNs {
    hv::test::NetNs ns;
    Netlink nl;
};
inline SwitchNs switch_ns() {
    auto ns = hv::test::NetNs::create("hvt");
    REQUIRE(ns);
    auto nl = Netlink::open(ns->fd());
    REQUIRE(nl);
    REQUIRE(nl->create_bridge("br0"));
    REQUIRE(nl->set_up("br0", true));
    return SwitchNs{std::move(*ns), std::move(*nl)};
}

/// The harness's backend with tap vifs in `ns`.
inline BackendOptions tap_options(const hv::test::NetNs& ns) {
    BackendOptions o = Env::loop_options();
    o.host = HostMode::tap;
    o.netns_fd = ns.fd();
    return o;
}

}  // namespace hv::net::test
