// netif tx/rx parsing (xen-abi.md §6.3–6.5): untrusted tx request slots -> a validated TxPacket
// with its verdict (forward / drop / disable the vif), the one mapping to NETIF_RSP_*, the tx
// responses for the consumed slots, and the rx side: slots a packet needs and its responses.
// Layer: L2 (netback). Pure functions on copies of ring slots: no syscalls, no logging; any thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "hv/expected.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "netback/engine.hpp"

namespace hv::net {

namespace wire = hv::rings;

/// Linux netback: follow-on slots (after the first, extras excluded) a packet may use before
/// it is dropped (XEN_NETBK_LEGACY_SLOTS_MAX = XEN_NETIF_NR_SLOTS_MIN) and before the frontend is
/// considered malicious (module parameter fatal_skb_slots, default 20).
inline constexpr unsigned XEN_NETBK_LEGACY_SLOTS_MAX = wire::XEN_NETIF_NR_SLOTS_MIN;
inline constexpr unsigned default_fatal_skb_slots = 20;
inline constexpr std::uint16_t eth_header_bytes = 14;

/// What the worker does with the slots parse_tx() looked at.
enum class TxVerdict : std::uint8_t {
    none,        // no slot to parse (not a guest fault)
    forward,     // a packet: copy its fragments, hand it to the engine, respond OKAY
    multicast,   // a dummy request carrying MCAST_ADD/DEL: update the filter, respond, no data
    drop,        // consume slots_consumed slots, respond NETIF_RSP_ERROR to each request
    fatal,       // the frontend is malicious or broken: disable the vif, consume nothing
};

/// Why (for counters, rate-limited logs and tests). Each value is one rejection branch.
enum class TxError : std::uint8_t {
    none,
    empty,                  // no slot available (not a guest fault; nothing to do)
    missing_extra,          // NETTXF_extra_info / EXTRA_FLAG_MORE but the ring has no more slots (fatal)
    extra_type_invalid,     // extra type 0 or >= XEN_NETIF_EXTRA_TYPE_MAX (fatal)
    missing_fragment,       // NETTXF_more_data but the ring has no more slots (fatal)
    too_many_slots,         // more than XEN_NETBK_LEGACY_SLOTS_MAX follow-on slots (drop)
    too_many_slots_fatal,   // more than fatal_skb_slots follow-on slots (fatal)
    fragment_exceeds_total, // a fragment bigger than what is left of slot 0's size (drop)
    crosses_page,           // offset + size > 4096 in any slot (fatal)
    packet_too_small,       // first fragment shorter than eth_header_bytes (drop)
    gso_size_zero,          // GSO extra with size 0 (fatal)
    gso_type_unknown,       // GSO extra of a type netif does not define (fatal)
    gso_type_not_offered,   // a defined GSO type the backend did not offer (drop)
    csum_setup_failed,      // csum_blank/GSO but no IPv4/IPv6 TCP/UDP header to offload on (drop)
    gso_not_tcp,            // GSO extra on a packet that is not TCP of that IP version (drop)
    csum_not_offered,       // csum_blank on an IP version whose checksum offload was not offered (drop)
    host_dropped,           // not a parse result: the worker dropped a good packet (engine, credit)
};
std::string_view to_string(TxError e) noexcept;

/// Backend choices the parser enforces.
struct TxConfig {
    bool gso_tcpv4 = true;   // feature-gso-tcpv4 offered
    bool gso_tcpv6 = true;   // feature-gso-tcpv6 offered
    bool csum4 = true;       // IPv4 partial checksums taken (feature-no-csum-offload absent/0)
    bool csum6 = true;       // IPv6 partial checksums taken (feature-ipv6-csum-offload = 1)
    unsigned max_slots = XEN_NETBK_LEGACY_SLOTS_MAX;  // follow-on slots accepted
    /// Follow-on slots beyond this: fatal. Clamped to [max_slots, default_fatal_skb_slots].
    unsigned fatal_slots = default_fatal_skb_slots;
};

/// One data fragment, or (index 0) the first fragment with its own length.
struct TxFragment {
    std::uint32_t gref = 0;
    std::uint16_t offset = 0;
    std::uint16_t size = 0;
    std::uint16_t id = 0;  // echoed in the response
};

/// Everything of a TxPacket but its fragment table: parse_tx() resets exactly this, so a packet
/// parsed into reused storage costs no clearing of the (mostly unused) table.
struct TxPacketHead {
    TxVerdict verdict = TxVerdict::fatal;
    TxError error = TxError::none;
    /// Ring slots to advance req_cons by (requests + extras). 0 on fatal.
    unsigned slots_consumed = 0;
    /// Extra-info slots among them (they follow slot 0 and get NETIF_RSP_NULL).
    unsigned extra_count = 0;
    /// slot 0's size: the whole packet length as the frontend declared it.
    std::uint16_t total_size = 0;
    std::uint16_t flags = 0;  // slot 0's NETTXF_*
    /// frags[0] = first fragment (size = its own length), then the follow-on slots in order.
    /// On drop every consumed request is listed (up to fatal_slots + 1), so each gets a response.
    /// Entries from nr_frags on are stale.
    unsigned nr_frags = 0;

    bool csum_blank() const noexcept { return (flags & wire::NETTXF_csum_blank) != 0; }
    bool data_validated() const noexcept { return (flags & wire::NETTXF_data_validated) != 0; }

    std::uint8_t gso_type = wire::XEN_NETIF_GSO_TYPE_NONE;  // validated
    std::uint16_t gso_size = 0;                              // MSS, > 0 when gso_type != NONE
    bool has_hash = false;
    std::uint8_t hash_type = 0;       // _XEN_NETIF_CTRL_HASH_TYPE_* bit number, as sent
    std::uint32_t hash_value = 0;
    bool mcast_add = false;
    bool mcast_del = false;
    std::array<std::uint8_t, 6> mcast_addr{};
};

struct TxPacket : TxPacketHead {
    std::array<TxFragment, 1 + default_fatal_skb_slots> frags{};
};

/// Parses the packet starting at slots[0] (the slot at req_cons); `slots` are *copies* of all
/// unconsumed requests (the caller copied them out of shared memory once). Follows Linux
/// netback's xenvif_tx_build_gops / xenvif_get_extras / xenvif_count_requests, in that order.
/// The same into `out` (the worker's reused batch storage: no per-packet copy of the table).
namespace detail {
/// parse_tx() of a packet whose slot 0 (already in p.frags[0], the head reset) has
/// NETTXF_more_data or NETTXF_extra_info.
void parse_tx_slots(std::span<const wire::netif_tx_request> slots, const TxConfig& cfg,
                    TxPacket& p) noexcept;
}  // namespace detail
inline void parse_tx(std::span<const wire::netif_tx_request> slots, const TxConfig& cfg,
                     TxPacket& p) noexcept {
    static_cast<TxPacketHead&>(p) = TxPacketHead{};  // frags[0, nr_frags) are written below
    if (slots.empty()) {
        p.verdict = TxVerdict::none;
        p.error = TxError::empty;
        return;
    }
    const wire::netif_tx_request first = slots[0];
    p.total_size = first.size;
    p.flags = first.flags;
    p.frags[0] = TxFragment{first.gref, first.offset, first.size, first.id};
    p.nr_frags = 1;
    if ((first.flags & (wire::NETTXF_extra_info | wire::NETTXF_more_data)) != 0) {
        detail::parse_tx_slots(slots, cfg, p);
        return;
    }
    // One slot, no extra (the common small frame): the rules of the general case that apply
    // to it, in the same order.
    if (first.size < eth_header_bytes) {
        p.verdict = TxVerdict::drop;
        p.error = TxError::packet_too_small;
        p.slots_consumed = 1;
    } else if (unsigned{first.offset} + first.size > wire::XEN_PAGE_SIZE) {
        p.verdict = TxVerdict::fatal;
        p.error = TxError::crosses_page;
    } else {
        p.verdict = TxVerdict::forward;
        p.slots_consumed = 1;
    }
}
inline TxPacket parse_tx(std::span<const wire::netif_tx_request> slots,
                         const TxConfig& cfg) noexcept {
    TxPacket p;
    parse_tx(slots, cfg, p);
    return p;
}

/// The single mapping from an outcome to the status of the packet's request responses.
/// forward -> OKAY; multicast -> OKAY or ERROR (filter_ok); drop and host_dropped -> ERROR
/// (host_dropped: DROPPED); fatal -> no response at all (returns NETIF_RSP_ERROR, unused).
std::int16_t to_netif_status(TxVerdict v, TxError e, bool filter_ok = true) noexcept;

/// Writes the responses for a forwarded/multicast/dropped packet: slot 0's id and `status`,
/// NETIF_RSP_NULL for each extra slot, then each follow-on request's id and `status`.
/// out.size() must be >= p.slots_consumed; returns the number written.
unsigned build_tx_responses(const TxPacket& p, std::int16_t status,
                            std::span<wire::netif_tx_response> out) noexcept;

/// How far into a frame tx_offload_header() looks for headers: Ethernet, 256 bytes of IP
/// headers (Linux netback's pull limit for IPv6, MAX_IPV6_HDR_LEN) and a TCP header with the
/// largest options, rounded up.
inline constexpr std::size_t tx_offload_header_bytes = 384;

/// The virtio-net header for a forwarded packet, from its flags/GSO extra and its headers, as
/// Linux netback's checksum_setup/skb_checksum_setup does. `frame` is the backend's private copy
/// of the packet (at least its headers; `frame_len` the whole length). NETTXF_csum_blank (or a
/// GSO extra: Linux "gso checksum fixup") needs Ethernet + IPv4 (not a fragment) or IPv6 (hop,
/// dest, routing, auth and unfragmented fragment headers walked) + a complete TCP or UDP
/// header: csum_start/csum_offset point at its checksum. For a GSO packet without csum_blank
/// the pseudo-header sum is written into `frame`'s checksum field (the fixup). GSO needs TCP of
/// the matching IP version; hdr_len covers the TCP header. NETTXF_data_validated alone gives
/// F_DATA_VALID. A partial checksum (csum_blank or GSO) of an IP version `cfg` does not take
/// (csum4/csum6: what the backend offered) is refused. Errors are drop reasons:
/// TxError::csum_setup_failed / gso_not_tcp / csum_not_offered. The headers, through the whole
/// TCP/UDP header, must lie in the first tx_offload_header_bytes of the frame (more is
/// csum_setup_failed): what a backend copies privately before sending the rest from the
/// frontend's pages.
namespace detail {
/// tx_offload_header() for a packet with csum_blank or a GSO type.
hv::expected<VnetHdr, TxError> tx_partial_csum_header(const TxPacket& p,
                                                      std::span<std::uint8_t> frame,
                                                      std::size_t frame_len,
                                                      const TxConfig& cfg) noexcept;
}  // namespace detail
/// The packet asks for a partial checksum (csum_blank) or segmentation (a GSO type).
inline bool tx_wants_offload(const TxPacketHead& p) noexcept {
    return p.csum_blank() || p.gso_type != wire::XEN_NETIF_GSO_TYPE_NONE;
}
/// tx_offload_header() of a packet that does not (!tx_wants_offload): F_DATA_VALID or nothing.
inline VnetHdr tx_plain_header(const TxPacketHead& p) noexcept {
    VnetHdr h;
    if (p.data_validated()) {
        h.flags = VnetHdr::F_DATA_VALID;
    }
    return h;
}
inline hv::expected<VnetHdr, TxError> tx_offload_header(const TxPacket& p,
                                                        std::span<std::uint8_t> frame,
                                                        std::size_t frame_len,
                                                        const TxConfig& cfg = {}) noexcept {
    if (tx_wants_offload(p)) {
        return detail::tx_partial_csum_header(p, frame, frame_len, cfg);
    }
    return tx_plain_header(p);  // nothing to offload: no header of the frame to look at
}

// ---- RX (backend -> frontend) ----------------------------------------------------------------

/// What the frontend negotiated (frontend xenstore keys).
struct RxFrontend {
    bool sg = true;          // feature-sg: multi-slot packets
    bool gso_tcpv4 = false;  // feature-gso-tcpv4
    bool gso_tcpv6 = false;  // feature-gso-tcpv6
    unsigned max_slots = wire::XEN_NETIF_NR_SLOTS_MIN;  // what netfront accepts per packet
    /// xdp-headroom (feature-xdp-headroom): data in a packet's first slot starts at this
    /// offset in the page (rsp.offset), leaving 4096 - headroom bytes of it for data.
    std::uint16_t headroom = 0;
};

struct RxPacketInfo {
    std::size_t len = 0;              // frame bytes
    bool csum_blank = false;          // partial checksum (NETRXF_csum_blank|data_validated)
    bool data_validated = false;      // checksum verified (NETRXF_data_validated)
    std::uint8_t gso_type = wire::XEN_NETIF_GSO_TYPE_NONE;
    std::uint16_t gso_size = 0;
    bool has_hash = false;
    std::uint8_t hash_type = 0;
    std::uint32_t hash_value = 0;
};

/// Rx ring slots (= rx requests) the packet needs: one per started 4 KiB of data (the first
/// slot holding 4096 - headroom), +1 for a GSO extra, +1 for a hash extra. Errors:
/// Errc::frame_too_big if it exceeds what the frontend accepts (no sg and more than one data
/// slot, more than max_slots data slots, a GSO type the frontend did not advertise, a headroom
/// that leaves no room in the first slot, or len 0 / len > 64 KiB + Ethernet header).
hv::Result<unsigned> rx_slots_needed(const RxPacketInfo& p, const RxFrontend& fe) noexcept;

/// One rx slot to fill: copy `copy_len` bytes from packet offset `src_offset` into `gref` at
/// rsp.offset (the headroom in the first data slot, else 0), then write `rsp` into the ring at
/// the index of the request it consumed.
/// Extra slots have copy_len 0 and `rsp` holds a netif_extra_info.
struct RxSlot {
    std::uint32_t gref = 0;
    std::uint32_t src_offset = 0;
    std::uint16_t copy_len = 0;
    bool extra = false;
    wire::netif_rx_response rsp{};
};

/// Plans the rx responses for one packet over the frontend's requests `reqs` (copies, in ring
/// order): data slot 0 (csum flags, NETRXF_extra_info), the extras (GSO then HASH, MORE on all
/// but the last), then the other data slots; NETRXF_more_data on every data slot but the last.
/// Returns the slots used (= rx_slots_needed); Errc::busy when reqs is too short (wait for
/// more rx requests), and rx_slots_needed's errors.
hv::Result<unsigned> build_rx_slots(const RxPacketInfo& p, const RxFrontend& fe,
                                    std::span<const wire::netif_rx_request> reqs,
                                    std::span<RxSlot> out) noexcept;

}  // namespace hv::net
