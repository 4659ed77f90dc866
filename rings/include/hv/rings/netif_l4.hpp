// Where the TCP/UDP header of an Ethernet frame starts: what both ends of a netif need to act on
// NETTXF_csum_blank / NETRXF_csum_blank (Linux skb_checksum_setup_ip{,v6}). Pure bytes, no
// syscalls. Layer: L0, header-only. GUEST: every offset comes from peer bytes and is checked
// against the frame length before use.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace hv::rings {

inline constexpr std::uint8_t netif_ipproto_tcp = 6;
inline constexpr std::uint8_t netif_ipproto_udp = 17;

struct NetifL4 {
    std::size_t off = 0;     ///< transport header offset in the frame
    std::uint8_t proto = 0;  ///< IP protocol number of that header
    bool ipv6 = false;
};

/// The transport header of an unfragmented IPv4 packet, or of an IPv6 packet after its
/// hop-by-hop, routing, destination-options, AH and atomic-fragment headers (bounded by the
/// payload length). nullopt: not Ethernet+IP (VLAN-tagged included), a fragment, or truncated.
/// The transport header itself is not checked to fit: the caller knows how big it needs it.
inline std::optional<NetifL4> netif_find_l4(std::span<const std::uint8_t> f) noexcept {
    constexpr std::size_t eth = 14;
    auto be16 = [&](std::size_t at) {
        return static_cast<std::uint16_t>(f[at] << 8 | f[at + 1]);
    };
    if (f.size() < eth) {
        return std::nullopt;
    }
    const std::uint16_t ethertype = be16(12);
    NetifL4 r;
    if (ethertype == 0x0800) {
        if (f.size() < eth + 20 || (f[eth] >> 4) != 4) {
            return std::nullopt;
        }
        const std::size_t ihl = static_cast<std::size_t>(f[eth] & 0x0f) * 4;
        if (ihl < 20 || f.size() < eth + ihl) {
            return std::nullopt;
        }
        if ((be16(eth + 6) & 0x3fff) != 0) {  // MF or a fragment offset
            return std::nullopt;
        }
        r.proto = f[eth + 9];
        r.off = eth + ihl;
        return r;
    }
    if (ethertype != 0x86dd || f.size() < eth + 40 || (f[eth] >> 4) != 6) {
        return std::nullopt;
    }
    r.ipv6 = true;
    const std::size_t end = std::min(f.size(), eth + 40 + std::size_t{be16(eth + 4)});
    std::uint8_t next = f[eth + 6];
    std::size_t off = eth + 40;
    // Each extension header moves `off` forward by >= 8 bytes and must start before `end`.
    for (;;) {
        switch (next) {
            case 0:   // hop-by-hop
            case 43:  // routing
            case 60:  // destination options
                if (off + 8 > end) {
                    return std::nullopt;
                }
                next = f[off];
                off += (std::size_t{f[off + 1]} + 1) * 8;
                continue;
            case 51:  // AH
                if (off + 8 > end) {
                    return std::nullopt;
                }
                next = f[off];
                off += (std::size_t{f[off + 1]} + 2) * 4;
                continue;
            case 44:  // fragment: only an atomic one (offset 0, no MF) is not a fragment
                if (off + 8 > end || (be16(off + 2) & 0xfff9) != 0) {
                    return std::nullopt;
                }
                next = f[off];
                off += 8;
                continue;
            default:
                r.proto = next;
                r.off = off;
                return off <= end ? std::optional<NetifL4>(r) : std::nullopt;
        }
    }
}

/// The checksum field of a TCP (16) or UDP (6) header whose complete fixed header fits in the
/// frame; 0 when neither (no partial checksum can be placed).
inline std::size_t netif_l4_csum_offset(const NetifL4& l4, std::size_t frame_len) noexcept {
    if (l4.proto == netif_ipproto_tcp && l4.off + 20 <= frame_len) {
        return 16;
    }
    if (l4.proto == netif_ipproto_udp && l4.off + 8 <= frame_len) {
        return 6;
    }
    return 0;
}

/// One's-complement sum of `d` (16-bit big-endian words, an odd last byte padded with zero),
/// added to `sum` and not folded.
inline std::uint32_t netif_sum16(std::span<const std::uint8_t> d, std::uint32_t sum) noexcept {
    std::uint64_t s = sum;
    std::size_t i = 0;
    for (; i + 1 < d.size(); i += 2) {
        s += static_cast<std::uint32_t>(d[i] << 8 | d[i + 1]);
    }
    if (i < d.size()) {
        s += static_cast<std::uint32_t>(d[i] << 8);
    }
    while ((s >> 32) != 0) {
        s = (s & 0xffffffffU) + (s >> 32);
    }
    return static_cast<std::uint32_t>(s);
}

/// The checksum field's value for an unfolded sum of everything from csum_start on (pieces
/// summed with netif_sum16, each but the last of even length): folded, complemented, and 0
/// sent as 0xffff, as Linux's skb_checksum_help does, so a UDP checksum is never "none".
inline std::uint16_t netif_fold_csum(std::uint32_t sum) noexcept {
    while ((sum >> 16) != 0) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    const auto v = static_cast<std::uint16_t>(~sum);
    return v == 0 ? 0xffff : v;
}

/// What a partial checksum (NETTXF_csum_blank, virtio F_NEEDS_CSUM) asks of whoever completes
/// it: the field at `csum_start + csum_offset` holds the pseudo-header sum; the sum from
/// `csum_start` to the end of the frame, complemented, is the checksum (0 is sent as 0xffff,
/// as Linux's skb_checksum_help does, so a UDP checksum is never "none"). Returns the value
/// (host order) to store in the field; the caller writes it (the frame may be scattered).
/// Precondition: csum_start + csum_offset + 2 <= f.size().
inline std::uint16_t netif_partial_csum(std::span<const std::uint8_t> f,
                                        std::size_t csum_start) noexcept {
    return netif_fold_csum(netif_sum16(f.subspan(csum_start), 0));
}

}  // namespace hv::rings
