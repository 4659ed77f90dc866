// The root tests' network (design.md §11: all of it in namespaces the test created):
//   ns "sw":   switch (Linux bridge or private OVS netdev bridge) with ports vif1.0 (our tap,
//              driven by a NetEngine) and veth0
//   ns "peer": veth1 = 10.7.0.2/24, the far end
#pragma once

#include <memory>
#include <optional>

#include "frames.hpp"
#include "netback/engine.hpp"
#include "netback/ovs.hpp"
#include "netback/tap.hpp"
#include "netns.hpp"
#include "temp_dir.hpp"

namespace hv::test::net {

enum class SwitchKind { linux_bridge, ovs };

struct Topology {
    static constexpr const char* peer_ip = "10.7.0.2";
    static constexpr const char* guest_ip = "10.7.0.1";

    /// Builds it all; REQUIREs each step. software_segmentation turns off TSO/checksum offload on
    /// veth0 (so the kernel segments GSO frames and computes checksums itself) and rx checksum
    /// offload on veth1 (so the peer's stack verifies every checksum).
    static std::unique_ptr<Topology> make(SwitchKind kind, bool software_segmentation);

    // Declaration order = construction order; destroyed in reverse: engine (tap fd) first,
    // then OVS daemons, then the namespaces that held them.
    hv::test::NetNs sw;
    hv::test::NetNs peer;
    hv::test::TempDir dir{"hvkit-net"};
    std::optional<hv::net::OvsInstance> ovs;
    std::unique_ptr<hv::net::NetEngine> engine;

    Topology(hv::test::NetNs a, hv::test::NetNs b) : sw(std::move(a)), peer(std::move(b)) {}
};

}  // namespace hv::test::net

namespace hv::test::net {

/// The guest resolves the peer with ARP, then pings it; the reply comes back intact.
void check_arp_and_ping(Topology& t);
/// The guest opens a TCP connection to a listener in the peer namespace and sends one ~64 KiB
/// frame with a TSO virtio-net header; the peer's socket receives every byte, and a packet
/// socket on veth1 sees MTU-sized segments whose IP and TCP checksums are right.
void check_tso(Topology& t);

}  // namespace hv::test::net
