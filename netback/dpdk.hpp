// DPDK host side of netback (design.md §8: the kernel-bypass path). A DpdkPort is one DPDK
// ethdev made from a vdev (for vifs a `net_vhost` port in vhost-user server mode, so a DPDK
// switch such as OVS-DPDK's dpdkvhostuserclient port or dpdk-testpmd's virtio-user connects to
// its socket; tests also use `net_af_packet` on a veth in their own namespace). Each queue pair
// of the port becomes one NetEngine for one RingWorker thread. The EAL starts once per process,
// lazily, at the first DpdkPort::open(). Layer: L3 (engines). Built only when pkg-config finds
// libdpdk (HV_HAVE_DPDK); without it open() fails with EOPNOTSUPP and a logged reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "hv/expected.hpp"
#include "netback/engine.hpp"

namespace hv::net {

/// True when this build links DPDK.
bool dpdk_built() noexcept;

/// The EAL arguments used when none were set: `-l <first CPU we may run on> --no-pci
/// --in-memory --no-huge -m 256 --no-telemetry --log-level=notice`. No hugepages: the vhost-user
/// server copies between its own mbufs and the peer's memory (which the peer shares with us),
/// so our pool needs no shared or pinned memory, and the host's hugepage pool stays untouched.
std::string dpdk_default_eal_args();

/// Sets the EAL arguments (split at spaces) for the EAL start; only before it started.
/// Errors: EALREADY once the EAL runs.
Result<void> dpdk_set_eal_args(std::string args);

/// Whether the EAL has been started in this process.
bool dpdk_eal_running() noexcept;

struct DpdkPortConfig {
    /// Device name (must begin with the driver's name: `net_vhost…`, `net_af_packet…`) and its
    /// devargs ("iface=/path/x.sock,client=0,queues=1").
    std::string name;
    std::string args;
    unsigned queues = 1;
    unsigned mtu = 1500;
    /// The network namespace the device is probed in (af_packet and tap PMDs open their
    /// interface there); -1: the caller's. Not owned.
    int netns_fd = -1;
    /// notify_fd() fallback tick while the link is up (see make_engine()); while it is down
    /// the tick slows to `down_tick`.
    std::chrono::microseconds tick{1000};
    std::chrono::milliseconds down_tick{100};
    /// Partial checksums of received frames are left blank for the frontend (it takes blank
    /// checksums): the port asks the PMD for TCP/UDP rx checksum offload when it has it, so
    /// the vhost PMD hands such frames over marked instead of completing them itself; the
    /// engines are made with Features{.csum = true} then. Off: the PMD (or the engine)
    /// completes them.
    bool rx_csum = false;
};

/// The devargs of a vhost-user server port on `socket_path` with `queues` queue pairs.
std::string vhost_server_args(const std::string& socket_path, unsigned queues);

/// One started DPDK ethdev. Must outlive every engine made from it; destroying it stops,
/// closes and removes the device (a vhost-user server removes its socket).
class DpdkPort {
public:
    /// Starts the EAL if needed, probes the vdev, configures `queues` queue pairs with a
    /// private mbuf pool sized for `mtu`, and starts the port. A stale socket file at a vhost
    /// `iface=` path is removed first. Errors: EOPNOTSUPP (built without DPDK), the EAL's or
    /// the PMD's errno (logged with DPDK's own message on stderr).
    static Result<std::unique_ptr<DpdkPort>> open(const DpdkPortConfig& cfg);
    ~DpdkPort();
    DpdkPort(const DpdkPort&) = delete;
    DpdkPort& operator=(const DpdkPort&) = delete;

    /// The NetEngine of queue pair `queue` (< queues). Features: csum, tso4, tso6, all done in
    /// software before a frame leaves (a DPDK switch forwarding in io/mac mode applies no tx
    /// offload, and the peer may not take virtio-net offloads): F_NEEDS_CSUM gets its checksum
    /// completed, a GSO frame is cut into gso_size TCP segments with their own IP and TCP
    /// headers and checksums (at most 256 segments: a smaller MSS is Errc::bad_offload).
    /// A received frame the peer sent with a partial checksum (virtio's NEEDS_CSUM: the vhost
    /// library marks it RTE_MBUF_F_RX_L4_CKSUM_NONE) keeps it blank with F_NEEDS_CSUM and its
    /// csum_start/csum_offset (TCP or UDP after Ethernet, one VLAN tag, IPv4 or IPv6) when
    /// `rx.csum` (the frontend takes blank checksums; open the port with `rx_csum` too), else
    /// it is completed here (DPDK 22.11's vhost PMD already does so itself when the port did
    /// not ask for rx checksum offload); one whose
    /// checksum cannot be placed (SCTP, a tunnel) goes on unmarked. Other frames carry complete
    /// checksums (flags 0).
    /// notify_fd() is a timerfd ticking every `tick` while the link is up (`down_tick` while
    /// down); receive() consumes the tick when a burst comes back empty. The vhost PMD's rx
    /// interrupt is not used: it is the peer's virtqueue kick eventfd, which must be re-armed
    /// through the PMD and changes at every peer reconnect (see README: DPDK vifs).
    /// A frame for a port whose link is down fails with ENETDOWN (netback answers
    /// NETIF_RSP_DROPPED); a full ring is Errc::busy.
    Result<std::unique_ptr<NetEngine>> make_engine(unsigned queue, Features rx = {});

    const std::string& name() const noexcept;
    std::uint16_t port_id() const noexcept;
    bool link_up() const noexcept;
    /// An eventfd that becomes readable when the port's link state changes (a vhost-user
    /// peer attaching or leaving; the PMD's link-state event, on DPDK's interrupt thread).
    /// The caller reads it to clear it, then asks link_up(). -1 when the PMD gives no such
    /// event. Lives as long as the port.
    int link_fd() const noexcept;

    struct Impl;

private:
    explicit DpdkPort(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::net
