// Guest-TX path (see tx.hpp). Layer: L2. Runs on one Queue's worker thread.
#include "netback/tx.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "hv/log.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hvmin/client.hpp"

namespace hv::net {

using rings::XEN_PAGE_SIZE;

Result<RateLimit> parse_rate(std::string_view text) noexcept {
    const auto comma = text.find(',');
    if (comma == std::string_view::npos || comma == 0 || comma + 1 == text.size()) {
        return fail(std::make_error_code(std::errc::invalid_argument));
    }
    auto num = [](std::string_view s, std::uint64_t& v) {
        const auto* end = s.data() + s.size();
        auto [p, ec] = std::from_chars(s.data(), end, v);
        return ec == std::errc() && p == end;
    };
    RateLimit r;
    if (!num(text.substr(0, comma), r.credit_bytes) || !num(text.substr(comma + 1), r.credit_usec) ||
        r.credit_usec == 0 || r.credit_usec > 1000ULL * 1000 * 1000 * 3600) {
        return fail(std::make_error_code(std::errc::invalid_argument));
    }
    return r;
}

// ---- CreditBucket ----------------------------------------------------------------------------

void CreditBucket::configure(RateLimit r, Clock::time_point now) noexcept {
    rate_ = r;
    remaining_ = r.credit_bytes;
    window_end_ = now + std::chrono::microseconds(r.credit_usec);
}

bool CreditBucket::take(std::uint64_t bytes, Clock::time_point now) noexcept {
    if (rate_.unlimited()) {
        return true;
    }
    if (bytes > remaining_ && now >= window_end_) {
        // SPEC: netback tx_credit_exceeded(): refill up to max(credit, 128 KiB) so a 64 KiB GSO
        // frame always fits one window.
        const std::uint64_t cap = std::max<std::uint64_t>(rate_.credit_bytes, 128 * 1024);
        remaining_ = std::min(remaining_ + rate_.credit_bytes, cap);
        window_end_ = now + std::chrono::microseconds(rate_.credit_usec);
    }
    if (bytes > remaining_) {
        return false;
    }
    remaining_ -= bytes;
    return true;
}

// ---- offload header --------------------------------------------------------------------------

Result<VnetHdr> tx_vnet_header(std::span<const std::byte> f, const TxPacket& p) noexcept {
    VnetHdr h;
    const bool gso = p.gso_type != rings::XEN_NETIF_GSO_TYPE_NONE;
    if (!p.csum_blank() && !gso) {
        if (p.data_validated()) {
            h.flags = VnetHdr::F_DATA_VALID;
        }
        return h;
    }
    const auto bad = [] { return fail(make_error_code(Errc::bad_offload)); };
    auto u8 = [&](std::size_t off) { return std::to_integer<unsigned>(f[off]); };
    auto be16 = [&](std::size_t off) { return (u8(off) << 8) | u8(off + 1); };
    std::size_t off = 12;
    if (f.size() < 14) {
        return bad();
    }
    unsigned type = be16(off);
    off += 2;
    if (type == 0x8100 || type == 0x88A8) {  // one VLAN tag
        if (f.size() < off + 4) {
            return bad();
        }
        type = be16(off + 2);
        off += 4;
    }
    unsigned proto = 0;
    bool v6 = false;
    if (type == 0x0800) {
        if (f.size() < off + 20 || (u8(off) >> 4) != 4) {
            return bad();
        }
        const std::size_t ihl = (u8(off) & 0xF) * 4U;
        if (ihl < 20 || f.size() < off + ihl) {
            return bad();
        }
        if ((be16(off + 6) & 0x3FFF) != 0) {  // a fragment: no L4 header to offload
            return bad();
        }
        proto = u8(off + 9);
        off += ihl;
    } else if (type == 0x86DD) {
        if (f.size() < off + 40 || (u8(off) >> 4) != 6) {
            return bad();
        }
        proto = u8(off + 6);
        v6 = true;
        off += 40;
    } else {
        return bad();
    }
    std::size_t l4_len = 0;
    if (proto == 6) {
        if (f.size() < off + 20) {
            return bad();
        }
        h.csum_offset = 16;
        l4_len = (u8(off + 12) >> 4) * 4U;
        if (l4_len < 20 || f.size() < off + l4_len) {
            return bad();
        }
    } else if (proto == 17 && !gso) {
        if (f.size() < off + 8) {
            return bad();
        }
        h.csum_offset = 6;
        l4_len = 8;
    } else {
        return bad();
    }
    if (gso) {
        // GSO frames carry a partial checksum (netfront always sets csum_blank with them).
        if (!p.csum_blank() || (p.gso_type == rings::XEN_NETIF_GSO_TYPE_TCPV4) == v6) {
            return bad();
        }
        h.gso_type = v6 ? VnetHdr::GSO_TCPV6 : VnetHdr::GSO_TCPV4;
        h.gso_size = p.gso_size;
        h.hdr_len = static_cast<std::uint16_t>(off + l4_len);
    }
    h.flags = VnetHdr::F_NEEDS_CSUM;
    h.csum_start = static_cast<std::uint16_t>(off);
    return h;
}

// ---- TxPath ----------------------------------------------------------------------------------

TxPath::TxPath(hvmin::Grants& grants, NetEngine& engine, VifStats& stats, DomId frontend,
               TxConfig cfg, LocalPages pages, std::string name)
    : grants_(grants),
      engine_(engine),
      stats_(stats),
      frontend_(frontend),
      cfg_(cfg),
      pages_(pages),
      name_(std::move(name)) {
    pend_.reserve(512);
    batch_.reserve(256);
    ops_.reserve(kBatchPackets * 2 * (2 + default_fatal_skb_slots));
    rsp_.resize(rings::ring_entries_for_pages<rings::NetifTxProtocol>(1));
}

TxRun TxPath::run(TxRing& ring, Clock::time_point now) noexcept {
    TxRun out;
    for (;;) {
        // Copy every unconsumed request once into private memory (GUEST: the slots stay
        // frontend-writable; only the copies are parsed).
        auto avail = ring.unconsumed();
        if (!avail) {
            out.fatal = true;
            out.reason = "tx ring: " + avail.error().message();
            break;
        }
        pend_.erase(pend_.begin(), pend_.begin() + static_cast<std::ptrdiff_t>(pend_head_));
        pend_head_ = 0;
        bool took = false;
        while (auto r = ring.take_request()) {
            pend_.push_back(*r);
            took = true;
        }
        std::span<const rings::netif_tx_request> view(pend_.data() + pend_head_,
                                                      pend_.size() - pend_head_);
        if (view.empty()) {
            break;
        }
        bool stop = false;
        while (!view.empty() && !stop) {
            TxPacket p = parse_tx(view, cfg_);
            if (p.verdict == TxVerdict::none) {
                break;
            }
            if (p.verdict == TxVerdict::fatal) {
                // A packet's slots are published together (netfront pushes whole packets), so
                // a missing slot is fatal here as in Linux's xenvif_count_requests.
                out.fatal = true;
                out.reason = std::string("tx: ") + std::string(to_string(p.error));
                stop = true;
                break;
            }
            if (p.verdict == TxVerdict::forward) {
                if (!bucket_.take(p.total_size, now)) {
                    out.throttled_until = bucket_.retry_at();
                    stop = true;
                    break;
                }
                if (bufs_used_ == kBatchPackets) {
                    flush(ring, out);
                }
                Entry e;
                e.pkt = p;
                e.buf = static_cast<int>(bufs_used_++);
                e.op_first = static_cast<unsigned>(ops_.size());
                // Fragments into the packet's linear buffer; a copy never crosses a local page.
                std::size_t pos = static_cast<std::size_t>(e.buf) * kPagesPerPacket * XEN_PAGE_SIZE;
                for (unsigned i = 0; i < p.nr_frags; ++i) {
                    const TxFragment& fr = p.frags[i];
                    std::size_t done = 0;
                    while (done < fr.size) {
                        const std::size_t in_page = pos % XEN_PAGE_SIZE;
                        const std::size_t n = std::min<std::size_t>(fr.size - done, XEN_PAGE_SIZE - in_page);
                        rings::gnttab_copy op{};
                        op.source.u.ref = fr.gref;
                        op.source.domid = frontend_.get();
                        op.source.offset = static_cast<std::uint16_t>(fr.offset + done);
                        op.dest.u.gmfn = pages_.first_frame + pos / XEN_PAGE_SIZE;
                        op.dest.domid = rings::DOMID_SELF;
                        op.dest.offset = static_cast<std::uint16_t>(in_page);
                        op.len = static_cast<std::uint16_t>(n);
                        op.flags = rings::GNTCOPY_source_gref;
                        ops_.push_back(op);
                        done += n;
                        pos += n;
                    }
                }
                e.op_count = static_cast<unsigned>(ops_.size()) - e.op_first;
                batch_.push_back(e);
            } else {
                // drop (guest fault, counted) or multicast (no filter: answered OKAY).
                Entry e;
                e.pkt = p;
                e.status = to_netif_status(p.verdict, p.error);
                if (p.verdict == TxVerdict::drop) {
                    VifStats::add(stats_.tx_errors);
                    HV_LOG_RL(warn, "netback %s: tx packet dropped: %s", name_.c_str(),
                              std::string(to_string(p.error)).c_str());
                }
                batch_.push_back(e);
            }
            pend_head_ += p.slots_consumed;
            view = view.subspan(p.slots_consumed);
        }
        flush(ring, out);
        if (stop || !took) {
            break;
        }
    }
    return out;
}

void TxPath::flush(TxRing& ring, TxRun& out) noexcept {
    if (batch_.empty()) {
        return;
    }
    bool copy_ok = true;
    if (!ops_.empty()) {
        if (auto r = grants_.copy(ops_); !r) {
            HV_LOG_RL(error, "netback %s: grant copy: %s", name_.c_str(), r.error().message().c_str());
            copy_ok = false;
        }
    }
    for (Entry& e : batch_) {
        if (e.buf < 0) {
            continue;
        }
        bool ok = copy_ok;
        for (unsigned i = 0; ok && i < e.op_count; ++i) {
            ok = ops_[e.op_first + i].status == rings::GNTST_okay;
        }
        if (!ok) {
            // GUEST: a bad or foreign grant: the packet is refused, the vif keeps running.
            VifStats::add(stats_.tx_errors);
            HV_LOG_RL(warn, "netback %s: tx grant copy failed", name_.c_str());
            e.status = rings::NETIF_RSP_ERROR;
            continue;
        }
        std::byte* data = pages_.base + static_cast<std::size_t>(e.buf) * kPagesPerPacket * XEN_PAGE_SIZE;
        const std::size_t len = e.pkt.total_size;
        auto hdr = tx_vnet_header({data, len}, e.pkt);
        if (!hdr) {
            VifStats::add(stats_.tx_errors);
            HV_LOG_RL(warn, "netback %s: tx offload flags do not fit the packet's headers",
                      name_.c_str());
            e.status = rings::NETIF_RSP_ERROR;
            continue;
        }
        const iovec iov{data, len};
        if (auto s = engine_.send(*hdr, {&iov, 1}); !s) {
            VifStats::add(stats_.tx_dropped);
            e.status = to_netif_status(TxVerdict::forward, TxError::host_dropped);
            continue;
        }
        VifStats::add(stats_.tx_packets);
        VifStats::add(stats_.tx_bytes, len);
        e.status = rings::NETIF_RSP_OKAY;
    }
    for (const Entry& e : batch_) {
        const unsigned n = build_tx_responses(e.pkt, e.status, rsp_);
        for (unsigned i = 0; i < n; ++i) {
            ring.put_response(rsp_[i]);
        }
    }
    if (ring.push_responses()) {
        out.notify = true;
    }
    batch_.clear();
    ops_.clear();
    bufs_used_ = 0;
}

}  // namespace hv::net
