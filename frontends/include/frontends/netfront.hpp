// libnetfront: the guest side of the netif protocol (xen-abi.md §4.11, §6; design §9).
// One Device per vif: the xenbus handshake (netfront goes 1 → 4, skipping Initialised) and
// 1..N queues, each a tx ring and an rx ring with one or two event channels and a pool of
// granted pages (tx pages read-only, rx pages writable, granted once at connect).
// Layer: frontends (links hv::rings, hv::hvmin_client, hv::xenbus). Threads: a Device is driven
// by ONE thread: every member, control and data path, from that thread.
#pragma once

#include <poll.h>
#include <sys/uio.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include "hv/expected.hpp"
#include "hv/spin.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/strong.hpp"

namespace hv::hvmin {
class Services;
}
namespace hv::xs {
class Client;
}

namespace hv::netfront {

/// Errors of libnetfront (category "hv.netfront").
enum class Errc {
    not_connected = 1,  ///< send() before Connected, or after the device died
    busy,               ///< no free tx slots/pages now: poll() and retry (backpressure)
    bad_packet,         ///< shorter than 14 bytes, longer than 65535, too many slots, bad GSO
    backend_protocol,   ///< the backend broke the protocol (missing rx-copy, bad response)
    device_gone,        ///< the device was removed
    timed_out,          ///< the handshake (or a multicast request's answer) took too long
    not_supported,      ///< the backend does not offer what was asked (multicast control)
    refused,            ///< the backend answered a multicast request with an error (list full)
};
const std::error_category& category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

/// What this frontend offers at most.
struct Options {
    unsigned max_queues = 1;   ///< used: min(own, backend's multi-queue-max-queues)
    bool split = true;         ///< split event channels when the backend offers them
    bool sg = true;            ///< feature-sg
    bool gso_tcpv4 = true;     ///< feature-gso-tcpv4 (rx GSO extras accepted)
    bool gso_tcpv6 = true;     ///< feature-gso-tcpv6
    bool csum = true;          ///< partial checksums accepted (else feature-no-csum-offload=1)
    bool rx_notify = true;     ///< feature-rx-notify: kick the backend when posting rx buffers
    /// feature-hvkit-persistent-pool (netback/README.md): when the backend offers it, tell it
    /// that the tx/rx buffer pages (granted once at connect) stay granted until disconnect, so
    /// it may keep them mapped; closing then waits (≤ 2 s) for the backend to let go before
    /// revoking them.
    bool persistent_pool = true;
    /// receive()'s spin window (hv::SpinPolicy): while packets arrived within it, it watches
    /// the response indices before sleeping. Default: the process default (HVKIT_POLL_US).
    std::chrono::microseconds spin = hv::default_spin();
    /// Lent rx packets (poll(fn, ctx), poll_each) of more than one slot are not joined into a
    /// contiguous buffer: their PacketView::data is empty and PacketView::parts names the
    /// bytes in their rx pages (for a caller that writes them on with writev: no copy).
    bool lend_slots = false;
    /// request-multicast-control = 1 when the backend offers feature-multicast-control: it
    /// then delivers only the multicast groups added with mcast_add() (broadcast always).
    bool multicast_control = false;
    /// Set up a control ring (ctrl-ring-ref, event-channel-ctrl) when the backend offers
    /// feature-ctrl-ring: ctrl_request(), set_hash_key(), set_hash_mapping().
    bool ctrl_ring = false;
    /// xdp-headroom written when the backend offers feature-xdp-headroom (0: not written):
    /// the backend puts each packet's first bytes at this offset of its first rx page.
    std::uint16_t xdp_headroom = 0;
};

/// Offload metadata of a packet (tx: what to ask for; rx: what the backend said).
struct Offload {
    bool csum_blank = false;      ///< L4 checksum not computed (pseudo-header sum in place)
    bool data_validated = false;  ///< checksum known good
    std::uint8_t gso_type = rings::XEN_NETIF_GSO_TYPE_NONE;
    std::uint16_t gso_size = 0;   ///< MSS
    /// rx only, with csum_blank (or GSO): where the TCP/UDP header starts in the frame and its
    /// checksum field's offset from there (virtio-net csum_start/csum_offset), found as Linux
    /// netfront's checksum_setup does; a packet whose headers do not allow it is an rx error.
    std::uint16_t csum_start = 0;
    std::uint16_t csum_offset = 0;
    /// rx only: the backend's HASH extra (xen-abi §6.3), sent once the control ring set an
    /// algorithm and the packet's type is enabled: the type's bit number
    /// (_XEN_NETIF_CTRL_HASH_TYPE_*), the algorithm and the value (the extra's bytes, LSB first).
    bool has_hash = false;
    std::uint8_t hash_type = 0;
    std::uint8_t hash_algorithm = 0;
    std::uint32_t hash_value = 0;
};

/// What the backend takes from us (read from its directory at InitWait, xen-abi §6.6), so what
/// send() may ask for: sg = feature-sg (and Options::sg); csum4 = not feature-no-csum-offload;
/// csum6 = feature-ipv6-csum-offload; gso_tcpv4/v6 = feature-gso-tcpv4/-v6, each only with sg
/// and the checksum offload of its IP version (Linux netfront's xennet_fix_features).
struct TxOffloads {
    bool sg = false;
    bool csum4 = false;
    bool csum6 = false;
    bool gso_tcpv4 = false;
    bool gso_tcpv6 = false;
};

struct Packet {
    std::vector<std::byte> data;
    Offload offload;
    unsigned queue = 0;
};

/// A received packet lent to poll()'s callback: valid only during the call. `data` is the rx
/// page itself for a one-slot packet (no copy), else a scratch buffer the device reuses, or
/// empty with Options::lend_slots. `parts` always names the packet's bytes where they lie in
/// the rx pages, one entry per data slot, in order (one entry for a one-slot packet).
/// GUEST: the rx pages stay granted to the backend (the pool), so it may still write them
/// while the callback reads: copy what must stay consistent before checking it.
struct PacketView {
    std::span<const std::byte> data;
    std::span<const iovec> parts;
    Offload offload;
    unsigned queue = 0;
};

enum class Phase : std::uint8_t {
    waiting,    ///< handshake in progress
    connected,  ///< packets flow
    closed,     ///< the backend closed the device; may reconnect when it returns to InitWait
    dead,       ///< removed or broken
};

/// Counters of this device.
struct Counters {
    std::uint64_t tx_packets = 0, tx_errors = 0;  ///< tx responses OKAY / not OKAY
    std::uint64_t rx_packets = 0, rx_errors = 0;  ///< rx packets delivered / refused
    /// Event-channel notifications sent to the backend: for new tx requests, and for new rx
    /// buffers (only when the backend asked through req_event: feature-rx-notify).
    std::uint64_t tx_kicks = 0, rx_kicks = 0;
};

/// Linux netfront's checksum_setup for a received packet with csum_blank or a GSO type: fills
/// offload.csum_start/csum_offset from the packet's IPv4/IPv6 TCP/UDP headers. False (the
/// packet is an rx error) when there are none, or the GSO type names another IP version or
/// the transport is not TCP. GUEST: the bytes are the backend's.
bool locate_csum(std::span<const std::byte> frame, Offload& off) noexcept;
inline bool locate_csum(Packet& p) noexcept { return locate_csum(p.data, p.offload); }

class Device {
public:
    /// Prepares vif `devid` (frontend dir device/vif/<devid>): reads its backend, watches both
    /// `state` nodes with token watch_token(). `xs` and `hv` must outlive the Device.
    static Result<std::unique_ptr<Device>> create(hvmin::Services& hv, xs::Client& xs,
                                                  std::uint32_t devid, Options o = {});
    ~Device();  ///< Closed; grants revoked; ports closed.
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    /// Re-reads both sides' state and acts on the state reached (call on every watch event
    /// with watch_token(), and after create()).
    Result<void> on_state_change();
    /// Runs on_state_change() on this device's watch events until connected (or dead).
    /// Other events go to `other`. Errors: Errc::timed_out, device errors.
    Result<void> wait_connected(std::chrono::milliseconds timeout,
                                const std::function<void(const std::string& path,
                                                         const std::string& token)>& other = {});

    /// Queues one Ethernet frame on `queue` (sg fragments, GSO extra, csum flags from `off`).
    /// Only what tx_offloads() allows goes to the backend: a partial checksum (csum_blank) of an
    /// IP version the backend does not take is completed here and sent as data_validated.
    /// Errors: not_connected, busy (ring or pages full: poll() first), bad_packet (also: a GSO
    /// type the backend did not offer, more than one page without sg, or csum_blank the
    /// backend does not take on a frame without a TCP/UDP header to complete it in).
    Result<void> send(unsigned queue, std::span<const std::byte> frame, const Offload& off = {});
    /// Queues frames (no offload) on `queue` as send() does, in order, and publishes them with
    /// one producer-index update and at most one kick (a burst, as DPDK's tx_burst). Returns how
    /// many were queued: fewer than frames.size() when the ring or the pages ran out (poll()
    /// first) or a frame cannot be sent (it is the first not queued; send() it to see why).
    /// Errors (nothing queued): not_connected.
    Result<std::size_t> send_burst(unsigned queue, std::span<const std::span<const std::byte>> frames);
    /// Zero-copy send, step 1: lends free tx pages of `queue` for one frame of up to
    /// `max_bytes` (≤ 65535), page f holding the frame's bytes [f × 4096, (f + 1) × 4096), so
    /// the caller can read the frame straight into them (readv from a tap). The pages stay
    /// lent until send_pages() or teardown; asking again returns the same lease while it is
    /// big enough. Errors: not_connected, busy (fewer free pages or ring slots than such a
    /// frame needs: poll() first, or send() from a buffer of its own).
    Result<std::span<const iovec>> tx_pages(unsigned queue, std::size_t max_bytes);
    /// Step 2: sends the first `len` bytes of the lent pages as send() sends a frame (same
    /// checks, offloads and errors; a checksum completed here is written into the pages) and
    /// ends the lease: the frame's pages go to the backend, the others back to the free list.
    /// Errors: not_connected; EINVAL without a lease or with `len` beyond it; busy (ring slots
    /// were taken by other sends since tx_pages(): the lease and its bytes stay, retry after
    /// poll()); bad_packet (the lease ends, the frame is dropped).
    Result<void> send_pages(unsigned queue, std::size_t len, const Offload& off = {});
    /// Handles tx responses and received packets on every queue; appends packets to `out`.
    /// Never blocks. Returns the number of packets appended.
    std::size_t poll(std::vector<Packet>& out);
    /// As poll(), but lends each received packet to `fn(ctx, view)` instead of copying it into a
    /// Packet: no allocation per packet. `fn` must not call back into this Device.
    /// Arm::yes (as poll(out)): acks the event channels and arms the response events before
    /// returning (the final check, xen-abi §1.5), so the caller may then sleep on
    /// pollable_fds(). Arm::no: one pass over the rings and nothing else: no syscall, and the
    /// backend, finding the events unarmed, sends no notification — for a caller that polls in a
    /// loop (spinning) and calls arm() before it sleeps. Arm::unacked: as Arm::yes but acks no
    /// channel, for a caller that sleeps on pollable_fds() itself and hands what its poll found
    /// readable to ack_ready() first: no read of a channel that holds nothing. A notification
    /// that comes during the pass stays readable: the next sleep ends at once, none is lost.
    using PacketFn = void (*)(void* ctx, const PacketView& p);
    enum class Arm : std::uint8_t { no, yes, unacked };
    std::size_t poll(PacketFn fn, void* ctx, Arm arm = Arm::yes);
    /// poll(fn, ctx, arm) with a callable taking `const PacketView&`.
    template <class F>
    std::size_t poll_each(F&& fn, Arm arm = Arm::yes) {
        using Fn = std::remove_reference_t<F>;  // may be const: cast back to what it was
        return poll([](void* c, const PacketView& p) { (*static_cast<Fn*>(c))(p); },
                    const_cast<void*>(static_cast<const void*>(&fn)), arm);
    }
    /// Before sleeping on pollable_fds() after polls with Arm::no: acks the channels and arms
    /// the response events. True: responses came meanwhile (poll instead of sleeping), or a
    /// ring index is impossible (poll() then fails the device). False when not connected.
    bool arm() noexcept;
    /// Waits (≤ timeout) until at least `n` packets were received (appended to `out`).
    /// Returns how many arrived.
    std::size_t receive(std::vector<Packet>& out, std::size_t n,
                        std::chrono::milliseconds timeout);
    /// Event-channel fds of the connected queues (readable: work for poll()).
    std::vector<int> pollable_fds() const;
    /// Acks the channels whose fd is among `polled` with POLLIN in revents (what the caller's
    /// poll() said is pending), and no other: then poll(..., Arm::unacked).
    void ack_ready(std::span<const pollfd> polled) noexcept;
    /// True when a queue's rings hold responses poll() has not handled: a load of each ring's
    /// producer index, no syscall (what a polling caller spins on, with hv::spin_until, before
    /// it sleeps on pollable_fds()). A broken index also reads true (poll() then fails the device).
    bool responses_pending() noexcept;

    /// The backend's tx offloads, as negotiated at the last InitWait (all false before).
    /// A 6-byte Ethernet address.
    using MacAddr = std::array<std::uint8_t, 6>;
    /// Adds `addr` to the backend's multicast list of this vif (xen-abi §6.3: a request on
    /// queue 0 carrying only an MCAST_ADD extra) and waits for its answer (≤ `timeout`; tx
    /// responses of other packets are taken meanwhile). Errors: not_connected, not_supported
    /// (no feature-multicast-control), busy (queue 0 has no free slot), refused (the backend
    /// answered ERROR: its list is full, Linux keeps 64), timed_out, backend_protocol.
    Result<void> mcast_add(const MacAddr& addr, std::chrono::milliseconds timeout = std::chrono::seconds(5));
    /// Removes one entry `addr` (an address not listed is answered OKAY). Errors as mcast_add.
    Result<void> mcast_del(const MacAddr& addr, std::chrono::milliseconds timeout = std::chrono::seconds(5));
    /// Turns the backend's filtering on or off: writes request-multicast-control. Before the
    /// handshake it sets what setup() writes; once connected the backend must offer
    /// feature-dynamic-multicast-control (else not_supported), e.g. to take every group when
    /// mcast_add() was refused for a full list. Errors: not_supported, XenStore errors.
    Result<void> set_multicast_control(bool on);
    /// request-multicast-control as written (false when the backend does not offer it).
    bool multicast_control() const noexcept;
    /// Changes xdp-headroom while connected as Linux netfront does: writes the key and goes
    /// Reconfiguring; on_state_change() returns to Connected when the backend answers
    /// Reconfigured (rx goes on meanwhile; a packet's offset is taken from its response).
    /// Before the handshake it sets what setup() writes. The value is written as given (the
    /// backend bounds it). Errors: not_supported (no feature-xdp-headroom), XenStore errors.
    Result<void> set_xdp_headroom(std::uint16_t headroom);
    /// One control-ring request (xen-abi §6.7) and its response (≤ `timeout`), whatever its
    /// status. Errors: not_supported (no control ring: not asked for or not offered),
    /// not_connected, timed_out, backend_protocol (a broken response index or id).
    Result<rings::xen_netif_ctrl_response> ctrl_request(
        std::uint16_t type, std::uint32_t d0 = 0, std::uint32_t d1 = 0, std::uint32_t d2 = 0,
        std::chrono::milliseconds timeout = std::chrono::seconds(5));
    /// SET_HASH_KEY with `key` (≤ 4096 bytes; the backend takes ≤ 40) from the control ring's
    /// data page. Errors as ctrl_request, refused for a status other than SUCCESS.
    Result<void> set_hash_key(std::span<const std::uint8_t> key);
    /// SET_HASH_MAPPING: `entries` (≤ 1024) to the table from `offset`. Errors as set_hash_key.
    Result<void> set_hash_mapping(std::span<const std::uint32_t> entries, std::uint32_t offset);
    TxOffloads tx_offloads() const noexcept;
    Phase phase() const noexcept;
    unsigned queues() const noexcept;
    bool split() const noexcept;
    /// feature-hvkit-persistent-pool was negotiated (both sides offered it).
    bool persistent_pool() const noexcept;
    std::uint32_t devid() const noexcept;
    std::string mac() const;  ///< the `mac` key of the frontend dir ("" if absent)
    std::string frontend_dir() const;
    std::string backend_dir() const;
    std::string watch_token() const;
    Counters counters() const noexcept;
    /// Tx slots sent and not answered yet, over all queues.
    unsigned tx_outstanding() const noexcept;
    /// Diagnostics: per queue, both rings' shared indices (req_prod, req_event, rsp_prod,
    /// rsp_event), our private ones and whether each event channel is pending, on one line.
    std::string ring_state();

    // ---- test hooks (hostile-frontend tests drive the tx ring by hand) ----
    struct RawPage {
        std::uint16_t id;  ///< the tx id to use for a request naming this page
        GrantRef gref;     ///< granted read-only to the backend
        std::byte* data;
    };
    /// Takes a free tx page of `queue` (freed by the response carrying its id).
    Result<RawPage> raw_tx_page(unsigned queue);
    /// Writes raw request slots (extras as netif_extra_info in the first 8 bytes), pushes and
    /// kicks. Errors: busy if the ring lacks room.
    Result<void> raw_tx(unsigned queue, std::span<const rings::netif_tx_request> slots);
    /// Overwrites the shared tx req_prod with `value` and kicks (a hostile producer index).
    void raw_tx_req_prod(unsigned queue, std::uint32_t value);
    /// The same on the rx ring (kicks the rx channel). Use with raw_rx_hold(true), or the next
    /// buffer post overwrites it.
    void raw_rx_req_prod(unsigned queue, std::uint32_t value);
    /// Stops (true) or resumes re-posting rx buffers on every queue (a frontend that starves
    /// the backend of rx requests).
    void raw_rx_hold(bool hold);
    /// From now on rx buffers are posted naming `gref` (a bad, foreign or read-only grant)
    /// instead of their own; nullopt restores the real ones.
    void raw_rx_gref(std::optional<std::uint32_t> gref);
    /// The tx responses (id, status) seen since the last call, NULL ones included: at most the
    /// last 4096 (older ones are forgotten, so a program that never asks keeps no backlog;
    /// a fixed ring, so keeping them costs one store per response).
    std::vector<rings::netif_tx_response> take_tx_responses();

    struct Impl;

private:
    explicit Device(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::netfront

template <>
struct std::is_error_code_enum<hv::netfront::Errc> : std::true_type {};
