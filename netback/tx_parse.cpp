// netif tx parsing and rx planning. Every input slot is already a private copy; the rules and
// their order follow Linux netback (xenvif_tx_build_gops, xenvif_get_extras,
// xenvif_count_requests, xenvif_set_skb_gso; rx.c for the rx layout). No I/O, no logging.
#include "tx_parse.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

#include "engine.hpp"
#include "hv/rings/netif_l4.hpp"

namespace hv::net {
namespace {

constexpr unsigned page_size = wire::XEN_PAGE_SIZE;

void fatal(TxPacket& p, TxError e) noexcept {
    p.verdict = TxVerdict::fatal;
    p.error = e;
    p.slots_consumed = 0;
}

void dropped(TxPacket& p, TxError e, unsigned consumed) noexcept {
    p.verdict = TxVerdict::drop;
    p.error = e;
    p.slots_consumed = consumed;
}

wire::netif_extra_info extra_from_slot(const wire::netif_tx_request& slot) noexcept {
    // SPEC: io/netif.h — in a tx slot the extra occupies the first 8 of 12 bytes.
    wire::netif_extra_info e;
    static_assert(sizeof e <= sizeof slot);
    std::memcpy(&e, &slot, sizeof e);
    return e;
}

TxFragment frag_of(const wire::netif_tx_request& r) noexcept {
    return TxFragment{r.gref, r.offset, r.size, r.id};
}

}  // namespace

std::string_view to_string(TxError e) noexcept {
    switch (e) {
        case TxError::none:
            return "none";
        case TxError::empty:
            return "empty";
        case TxError::missing_extra:
            return "missing extra info";
        case TxError::extra_type_invalid:
            return "invalid extra type";
        case TxError::missing_fragment:
            return "missing fragment";
        case TxError::too_many_slots:
            return "too many slots";
        case TxError::too_many_slots_fatal:
            return "too many slots (malicious)";
        case TxError::fragment_exceeds_total:
            return "fragment exceeds remaining size";
        case TxError::crosses_page:
            return "slot crosses page boundary";
        case TxError::packet_too_small:
            return "packet shorter than eth_header_bytes";
        case TxError::gso_size_zero:
            return "GSO size zero";
        case TxError::gso_type_unknown:
            return "unknown GSO type";
        case TxError::gso_type_not_offered:
            return "GSO type not offered";
        case TxError::csum_setup_failed:
            return "cannot set up checksum offload";
        case TxError::gso_not_tcp:
            return "GSO on a packet that is not TCP";
        case TxError::csum_not_offered:
            return "checksum offload not offered for this IP version";
        case TxError::host_dropped:
            return "dropped by host";
    }
    return "?";
}

void detail::parse_tx_slots(std::span<const wire::netif_tx_request> slots, const TxConfig& cfg,
                            TxPacket& p) noexcept {
    // parse_tx() reset the head and filled in slot 0; it has more_data or extra_info.
    const unsigned max_slots = std::min(cfg.max_slots, default_fatal_skb_slots);
    const unsigned fatal_slots = std::clamp(cfg.fatal_slots, max_slots, default_fatal_skb_slots);
    const wire::netif_tx_request first = slots[0];
    std::size_t idx = 1;

    // xenvif_get_extras: a chain of extra-info slots, each consumed, each type-checked.
    bool have_gso = false;
    wire::netif_extra_info gso{};
    if ((first.flags & wire::NETTXF_extra_info) != 0) {
        wire::netif_extra_info extra{};
        do {
            if (idx >= slots.size()) {
                fatal(p, TxError::missing_extra);
                return;
            }
            extra = extra_from_slot(slots[idx]);
            ++idx;
            ++p.extra_count;
            if (extra.type == wire::XEN_NETIF_EXTRA_TYPE_NONE ||
                extra.type >= wire::XEN_NETIF_EXTRA_TYPE_MAX) {
                fatal(p, TxError::extra_type_invalid);
                return;
            }
            switch (extra.type) {  // a later extra of the same type replaces an earlier one
                case wire::XEN_NETIF_EXTRA_TYPE_GSO:
                    have_gso = true;
                    gso = extra;
                    break;
                case wire::XEN_NETIF_EXTRA_TYPE_MCAST_ADD:
                    p.mcast_add = true;
                    std::memcpy(p.mcast_addr.data(), extra.u.mcast.addr, 6);
                    break;
                case wire::XEN_NETIF_EXTRA_TYPE_MCAST_DEL:
                    p.mcast_del = true;
                    if (!p.mcast_add) {
                        std::memcpy(p.mcast_addr.data(), extra.u.mcast.addr, 6);
                    }
                    break;
                case wire::XEN_NETIF_EXTRA_TYPE_HASH:
                    p.has_hash = true;
                    p.hash_type = extra.u.hash.type;
                    p.hash_value = static_cast<std::uint32_t>(extra.u.hash.value[0]) |
                                   static_cast<std::uint32_t>(extra.u.hash.value[1]) << 8 |
                                   static_cast<std::uint32_t>(extra.u.hash.value[2]) << 16 |
                                   static_cast<std::uint32_t>(extra.u.hash.value[3]) << 24;
                    break;
                default:  // XDP (Linux): valid on tx, nothing to do
                    break;
            }
        } while ((extra.flags & wire::XEN_NETIF_EXTRA_FLAG_MORE) != 0);
    }

    // A multicast filter update is a "dummy" request: answered alone, its more_data ignored
    // (Linux does not count follow-on slots for it).
    if (p.mcast_add || p.mcast_del) {
        if (p.mcast_add) {
            p.mcast_del = false;  // Linux handles ADD and skips DEL when both are present
        }
        p.verdict = TxVerdict::multicast;
        p.slots_consumed = static_cast<unsigned>(idx);
        return;
    }

    // xenvif_count_requests: follow-on slots while more_data, size bookkeeping, limits.
    std::uint16_t remaining = first.size;
    TxError drop = TxError::none;
    if ((first.flags & wire::NETTXF_more_data) != 0) {
        unsigned n = 0;
        bool more = true;
        while (more) {
            if (idx >= slots.size()) {
                fatal(p, TxError::missing_fragment);
                return;
            }
            if (n >= fatal_slots) {
                fatal(p, TxError::too_many_slots_fatal);
                return;
            }
            if (drop == TxError::none && n >= max_slots) {
                drop = TxError::too_many_slots;
            }
            const wire::netif_tx_request txp = slots[idx];
            if (drop == TxError::none && txp.size > remaining) {
                // A frontend that sent >= 64 KiB wrapped slot 0's size: buggy, not malicious.
                drop = TxError::fragment_exceeds_total;
            }
            remaining = static_cast<std::uint16_t>(remaining - txp.size);
            ++n;
            ++idx;
            if (unsigned{txp.offset} + txp.size > page_size) {
                fatal(p, TxError::crosses_page);
                return;
            }
            p.frags[p.nr_frags++] = frag_of(txp);  // n <= fatal_slots: fits
            more = (txp.flags & wire::NETTXF_more_data) != 0;
        }
    }
    const unsigned consumed = static_cast<unsigned>(idx);
    if (drop != TxError::none) {
        dropped(p, drop, consumed);
        return;
    }
    p.frags[0].size = remaining;  // the first fragment's own length
    if (remaining < eth_header_bytes) {
        dropped(p, TxError::packet_too_small, consumed);
        return;
    }
    if (unsigned{first.offset} + remaining > page_size) {
        fatal(p, TxError::crosses_page);
        return;
    }

    // xenvif_set_skb_gso
    if (have_gso) {
        if (gso.u.gso.size == 0) {
            fatal(p, TxError::gso_size_zero);
            return;
        }
        const std::uint8_t t = gso.u.gso.type;
        if (t != wire::XEN_NETIF_GSO_TYPE_TCPV4 && t != wire::XEN_NETIF_GSO_TYPE_TCPV6) {
            fatal(p, TxError::gso_type_unknown);
            return;
        }
        const bool offered = t == wire::XEN_NETIF_GSO_TYPE_TCPV4 ? cfg.gso_tcpv4 : cfg.gso_tcpv6;
        if (!offered) {
            dropped(p, TxError::gso_type_not_offered, consumed);
            return;
        }
        p.gso_type = t;
        p.gso_size = gso.u.gso.size;
    }
    p.verdict = TxVerdict::forward;
    p.slots_consumed = consumed;
}

std::int16_t to_netif_status(TxVerdict v, TxError e, bool filter_ok) noexcept {
    if (e == TxError::host_dropped) {
        return wire::NETIF_RSP_DROPPED;
    }
    switch (v) {
        case TxVerdict::forward:
            return wire::NETIF_RSP_OKAY;
        case TxVerdict::multicast:
            return filter_ok ? wire::NETIF_RSP_OKAY : wire::NETIF_RSP_ERROR;
        case TxVerdict::none:
        case TxVerdict::drop:
        case TxVerdict::fatal:
            break;
    }
    return wire::NETIF_RSP_ERROR;
}

unsigned build_tx_responses(const TxPacket& p, std::int16_t status,
                            std::span<wire::netif_tx_response> out) noexcept {
    if (p.verdict == TxVerdict::fatal || p.verdict == TxVerdict::none || p.slots_consumed == 0 ||
        out.size() < p.slots_consumed) {
        return 0;
    }
    unsigned n = 0;
    out[n++] = {p.frags[0].id, status};
    for (unsigned i = 0; i < p.extra_count; ++i) {
        out[n++] = {0, wire::NETIF_RSP_NULL};
    }
    if (p.verdict != TxVerdict::multicast) {
        for (unsigned i = 1; i < p.nr_frags; ++i) {
            out[n++] = {p.frags[i].id, status};
        }
    }
    return n;
}

// ---- offload header (checksum_setup) -----------------------------------------------------

namespace {

std::uint32_t sum_bytes(std::span<const std::uint8_t> d, std::uint32_t sum) noexcept {
    for (std::size_t i = 0; i + 1 < d.size(); i += 2) {
        sum += static_cast<std::uint32_t>(d[i] << 8 | d[i + 1]);
    }
    if (d.size() % 2 != 0) {
        sum += static_cast<std::uint32_t>(d.back() << 8);
    }
    return sum;
}

std::uint16_t fold16(std::uint32_t sum) noexcept {
    while ((sum >> 16) != 0) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return static_cast<std::uint16_t>(sum);
}

}  // namespace

hv::expected<VnetHdr, TxError> detail::tx_partial_csum_header(const TxPacket& p,
                                                              std::span<std::uint8_t> frame,
                                                              std::size_t frame_len,
                                                              const TxConfig& cfg) noexcept {
    VnetHdr h;
    const bool gso = p.gso_type != wire::XEN_NETIF_GSO_TYPE_NONE;
    const std::span<std::uint8_t> f =
        frame.first(std::min({frame.size(), frame_len, tx_offload_header_bytes}));
    const auto l4 = wire::netif_find_l4(f);
    if (!l4 || l4->off > 0xffff) {
        return hv::unexpected(TxError::csum_setup_failed);
    }
    const std::size_t csum_offset = wire::netif_l4_csum_offset(*l4, f.size());
    if (csum_offset == 0) {
        return hv::unexpected(TxError::csum_setup_failed);
    }
    if (!(l4->ipv6 ? cfg.csum6 : cfg.csum4)) {
        return hv::unexpected(TxError::csum_not_offered);
    }
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = static_cast<std::uint16_t>(l4->off);
    h.csum_offset = static_cast<std::uint16_t>(csum_offset);

    if (!p.csum_blank()) {
        // Linux's GSO checksum fixup: a GSO packet is always partial; put the pseudo-header
        // sum (over the length from the transport header to the end) where the stack wants it.
        const std::size_t l4_len = frame_len - l4->off;
        std::uint32_t sum = 0;
        if (l4->ipv6) {
            sum = sum_bytes(f.subspan(eth_header_bytes + 8, 32), 0);  // source + destination
        } else {
            sum = sum_bytes(f.subspan(eth_header_bytes + 12, 8), 0);
        }
        sum += static_cast<std::uint32_t>(l4_len >> 16) + static_cast<std::uint32_t>(l4_len & 0xffff);
        sum += l4->proto;
        const std::uint16_t v = fold16(sum);
        f[l4->off + csum_offset] = static_cast<std::uint8_t>(v >> 8);
        f[l4->off + csum_offset + 1] = static_cast<std::uint8_t>(v);
    }
    if (gso) {
        const bool want_v6 = p.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV6;
        if (l4->proto != wire::netif_ipproto_tcp || l4->ipv6 != want_v6) {
            return hv::unexpected(TxError::gso_not_tcp);
        }
        const std::size_t doff = static_cast<std::size_t>(f[l4->off + 12] >> 4) * 4;
        if (doff < 20 || l4->off + doff > f.size()) {
            return hv::unexpected(TxError::csum_setup_failed);
        }
        h.gso_type = want_v6 ? VnetHdr::GSO_TCPV6 : VnetHdr::GSO_TCPV4;
        h.gso_size = p.gso_size;
        h.hdr_len = static_cast<std::uint16_t>(l4->off + doff);
    }
    return h;
}

// ---- RX ----------------------------------------------------------------------------------------

hv::Result<unsigned> rx_slots_needed(const RxPacketInfo& p, const RxFrontend& fe) noexcept {
    if (p.len == 0 || p.len > max_gso_frame_bytes) {
        return hv::fail(Errc::frame_too_big);
    }
    if (fe.headroom >= page_size) {
        // Linux netback copies to offset headroom + n and its grant copy fails: the frontend
        // gets nothing it can use either way.
        return hv::fail(Errc::frame_too_big);
    }
    const std::size_t data = (p.len + fe.headroom + page_size - 1) / page_size;
    if ((!fe.sg && data > 1) || data > fe.max_slots) {
        return hv::fail(Errc::frame_too_big);
    }
    unsigned extras = 0;
    switch (p.gso_type) {
        case wire::XEN_NETIF_GSO_TYPE_NONE:
            break;
        case wire::XEN_NETIF_GSO_TYPE_TCPV4:
        case wire::XEN_NETIF_GSO_TYPE_TCPV6:
            // SPEC: netif.h — the GSO extra is only sent if the frontend advertised the type.
            if (!(p.gso_type == wire::XEN_NETIF_GSO_TYPE_TCPV4 ? fe.gso_tcpv4 : fe.gso_tcpv6) ||
                p.gso_size == 0) {
                return hv::fail(Errc::frame_too_big);
            }
            ++extras;
            break;
        default:
            return hv::fail(Errc::bad_offload);
    }
    if (p.has_hash) {
        ++extras;
    }
    return static_cast<unsigned>(data) + extras;
}

hv::Result<unsigned> build_rx_slots(const RxPacketInfo& p, const RxFrontend& fe,
                                    std::span<const wire::netif_rx_request> reqs,
                                    std::span<RxSlot> out) noexcept {
    auto needed = rx_slots_needed(p, fe);
    if (!needed) {
        return needed;
    }
    if (reqs.size() < *needed || out.size() < *needed) {
        return hv::fail(Errc::busy);
    }
    const bool gso = p.gso_type != wire::XEN_NETIF_GSO_TYPE_NONE;
    const unsigned extras = (gso ? 1U : 0U) + (p.has_hash ? 1U : 0U);
    const unsigned data_slots = *needed - extras;

    unsigned slot = 0;
    std::size_t done = 0;
    auto put_data = [&](unsigned data_index) {
        // SPEC: xen-abi §6.4 — the frontend's xdp-headroom goes before the data of the first
        // slot only (rsp.offset), so that slot holds less.
        const std::size_t at = data_index == 0 ? fe.headroom : 0;
        const std::size_t chunk = std::min<std::size_t>(page_size - at, p.len - done);
        RxSlot& s = out[slot];
        s = RxSlot{};
        s.gref = reqs[slot].gref;
        s.src_offset = static_cast<std::uint32_t>(done);
        s.copy_len = static_cast<std::uint16_t>(chunk);
        s.rsp.id = reqs[slot].id;
        s.rsp.offset = static_cast<std::uint16_t>(at);
        s.rsp.status = static_cast<std::int16_t>(chunk);
        std::uint16_t flags = 0;
        if (data_index == 0) {
            if (p.csum_blank) {
                flags |= wire::NETRXF_csum_blank | wire::NETRXF_data_validated;
            } else if (p.data_validated) {
                flags |= wire::NETRXF_data_validated;
            }
            if (extras > 0) {
                flags |= wire::NETRXF_extra_info;
            }
        }
        if (data_index + 1 < data_slots) {
            flags |= wire::NETRXF_more_data;
        }
        s.rsp.flags = flags;
        done += chunk;
        ++slot;
    };
    auto put_extra = [&](const wire::netif_extra_info& e) {
        RxSlot& s = out[slot];
        s = RxSlot{};
        s.gref = reqs[slot].gref;
        s.extra = true;
        // SPEC: netif.h — in an rx slot the extra overlays the whole response.
        std::memcpy(&s.rsp, &e, sizeof e);
        ++slot;
    };

    put_data(0);
    if (gso) {
        wire::netif_extra_info e{};
        e.type = wire::XEN_NETIF_EXTRA_TYPE_GSO;
        e.flags = p.has_hash ? wire::XEN_NETIF_EXTRA_FLAG_MORE : 0;
        e.u.gso.size = p.gso_size;
        e.u.gso.type = p.gso_type;
        put_extra(e);
    }
    if (p.has_hash) {
        wire::netif_extra_info e{};
        e.type = wire::XEN_NETIF_EXTRA_TYPE_HASH;
        e.u.hash.type = p.hash_type;
        e.u.hash.algorithm = wire::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
        for (unsigned i = 0; i < 4; ++i) {
            e.u.hash.value[i] = static_cast<std::uint8_t>(p.hash_value >> (8 * i));
        }
        put_extra(e);
    }
    for (unsigned d = 1; d < data_slots; ++d) {
        put_data(d);
    }
    return slot;
}

}  // namespace hv::net
