// The same traffic through a private Open vSwitch (userspace netdev datapath) in a namespace.
#include <catch2/catch.hpp>

#include <unistd.h>

#include "skip.hpp"
#include "topology.hpp"

using namespace hv::test::net;

namespace {
void require_ovs() {
    hv::test::require_root();
    hv::test::skip_unless(::access("/usr/sbin/ovs-vswitchd", X_OK) == 0 &&
                              ::access("/usr/sbin/ovsdb-server", X_OK) == 0,
                          "ovs-vswitchd/ovsdb-server not installed");
}
}  // namespace

TEST_CASE("frames written into a tap on a private OVS bridge get ARP and ping answers",
          "[netback][root][ovs]") {
    require_ovs();
    auto t = Topology::make(SwitchKind::ovs, false);
    check_arp_and_ping(*t);
}

TEST_CASE("a 64 KiB TSO frame through a private OVS bridge arrives segmented with good checksums",
          "[netback][root][ovs]") {
    require_ovs();
    auto t = Topology::make(SwitchKind::ovs, true);
    check_tso(*t);
}

TEST_CASE("a private OVS instance stops completely and leaves its ports detachable",
          "[netback][root][ovs]") {
    require_ovs();
    auto t = Topology::make(SwitchKind::ovs, false);
    REQUIRE(t->ovs->del_port("br0", "veth0").has_value());
    REQUIRE(t->ovs->del_port("br0", "veth0").has_value());  // detaching twice is fine
    auto ports = hv::net::ovs_vsctl(t->ovs->db(), {"list-ports", "br0"});
    REQUIRE(ports.has_value());
    CHECK(ports->find("veth0") == std::string::npos);
    CHECK(ports->find("vif1.0") != std::string::npos);
    t->ovs->stop();
    CHECK_FALSE(t->ovs->running());
    CHECK_FALSE(hv::net::ovs_vsctl(t->ovs->db(), {"list-br"}, 2000).has_value());
}
