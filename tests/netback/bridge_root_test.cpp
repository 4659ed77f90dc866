// A tap behind a Linux bridge (built over rtnetlink) in a private namespace, a veth to a second
// namespace: ARP + ping, and a 64 KiB TSO frame segmented by the kernel.
#include <catch2/catch.hpp>

#include "hv/assert.hpp"
#include "skip.hpp"
#include "topology.hpp"

using namespace hv::test::net;

TEST_CASE("frames written into a bridged tap get ARP and ping answers", "[netback][root]") {
    hv::test::require_root();
    auto t = Topology::make(SwitchKind::linux_bridge, false);
    check_arp_and_ping(*t);
}

TEST_CASE("a 64 KiB TSO frame through a Linux bridge arrives segmented with good checksums",
          "[netback][root]") {
    hv::test::require_root();
    auto t = Topology::make(SwitchKind::linux_bridge, true);
    check_tso(*t);
}
