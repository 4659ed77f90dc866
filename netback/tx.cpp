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

bool CreditBucket::take_limited(std::uint64_t bytes, Clock::time_point now) noexcept {
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

// ---- TxPath ----------------------------------------------------------------------------------

TxPath::TxPath(hvmin::Grants& grants, NetEngine& engine, VifStats& stats, DomId frontend,
               TxConfig cfg, LocalPages pages, std::string name, DataMode mode,
               bool persistent)
    : grants_(grants),
      engine_(engine),
      stats_(stats),
      frontend_(frontend),
      cfg_(cfg),
      pages_(pages),
      name_(std::move(name)),
      mode_(mode) {
    // Fixed storage, reused batch after batch: no allocation and no capacity check per packet.
    pend_.resize(kPend);
    batch_.resize(kBatchPackets);
    ops_.resize(kPages + 2 * kBatchPackets);
    rsp_.resize(rings::ring_entries_for_pages<rings::NetifTxProtocol>(1));
    mapper_.set_persistent(persistent && mode == DataMode::map);
    if (persistent && mode == DataMode::map) {
        flush_at_ = kKeptFlushPackets;
    }
}

TxPath::~TxPath() { mapper_.drop(grants_); }

bool TxPath::all_kept(const TxPacket& p) const noexcept {
    for (unsigned i = 0; i < p.nr_frags; ++i) {
        if (mapper_.kept_page(p.frags[i].gref) == nullptr) {
            return false;
        }
    }
    return true;
}

TxRun TxPath::run(TxRing& ring, Clock::time_point now) noexcept {
    TxRun out;
    if (!flush(ring, out)) {
        return out;  // the engine is still full
    }
    for (;;) {
        // One producer-index read per pass; then every unconsumed request is copied once into
        // private memory (GUEST: the slots stay frontend-writable; only the copies are parsed).
        auto avail = ring.unconsumed();
        if (!avail) {
            out.fatal = true;
            out.reason = "tx ring: " + avail.error().message();
            break;
        }
        if (pend_head_ > 0) {  // a packet's slots still to parse move to the front
            std::copy(pend_.begin() + static_cast<std::ptrdiff_t>(pend_head_),
                      pend_.begin() + static_cast<std::ptrdiff_t>(pend_n_), pend_.begin());
            pend_n_ -= pend_head_;
            pend_head_ = 0;
        }
        const unsigned took = ring.take_requests({pend_.data() + pend_n_, pend_.size() - pend_n_});
        pend_n_ += took;
        std::span<const rings::netif_tx_request> view(pend_.data(), pend_n_);
        if (view.empty()) {
            break;
        }
        std::size_t looked = pend_head_;  // ahead_[pend_head_, looked) are this pass's lookups
        bool stop = false;
        while (!view.empty() && !stop) {
            // Room for the packet slot 0 declares (its total size): else copy out what the batch
            // holds first. The entry is then parsed in place and committed (++batch_n_) if kept.
            const std::size_t need = (std::size_t{view[0].size} + kAlign - 1) / kAlign * kAlign;
            if ((batch_n_ >= flush_at_ || area_used_ + need > kArea) && !flush(ring, out)) {
                stop = true;
                break;
            }
            // Kept mappings (persistent pool): the pages of the next kAhead slots are looked up
            // once and their first lines prefetched, so the copies of several frames wait for
            // their lines at once (each was just written on the frontend's CPU; issue #5). Only
            // a hint: every slot is still parsed and checked; a grant mapped by a flush after
            // its lookup (nullptr here) goes the op way, which finds the mapping.
            if (mapper_.persistent()) {
                for (const std::size_t end = std::min(pend_n_, pend_head_ + kAhead); looked < end;
                     ++looked) {
                    const rings::netif_tx_request& r = pend_[looked];
                    ahead_[looked] = mapper_.kept_page(r.gref);
                    if (ahead_[looked] != nullptr) {
                        __builtin_prefetch(ahead_[looked] + r.offset % XEN_PAGE_SIZE);
                    }
                }
            } else {
                ahead_[pend_head_] = nullptr;
            }
            Entry& e = batch_[batch_n_];
            const TxPacket& p = e.pkt;
            parse_tx(view, cfg_, e.pkt);
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
            e.copied = false;
            e.done = false;
            if (p.verdict == TxVerdict::forward) {
                if (!bucket_.take(p.total_size, now)) {
                    out.throttled_until = bucket_.retry_at();
                    stop = true;
                    break;
                }
                e.status = rings::NETIF_RSP_ERROR;
                e.buf = static_cast<int>(area_used_);
                const bool direct = p.total_size >= kDirectMin && all_kept(p);
                e.head = direct ? static_cast<std::uint32_t>(tx_offload_header_bytes)
                                : p.total_size;
                area_used_ += (std::size_t{e.head} + kAlign - 1) / kAlign * kAlign;
                e.op_first = static_cast<unsigned>(ops_n_);
                e.iov_first = static_cast<unsigned>(iovs_.size());
                std::size_t pos = static_cast<std::size_t>(e.buf);
                const bool one_piece = !direct && p.nr_frags == 1 &&
                                       pos % XEN_PAGE_SIZE + p.frags[0].size <= XEN_PAGE_SIZE;
                // Looked up (and prefetched) kAhead slots ahead, above.
                const std::byte* kept = one_piece ? ahead_[pend_head_] : nullptr;
                if (kept != nullptr) {
                    // One fragment in a kept mapping (persistent pool), landing within one
                    // local page: copied here, as MapCopier would through the same mapping
                    // (what it checks per op holds by construction: our own frame and
                    // direction, parse_tx's offset + size <= page, the local page test above),
                    // without an op to write, decode and judge.
                    std::memcpy(pages_.base + pos, kept + p.frags[0].offset, p.frags[0].size);
                    e.copied = true;
                    ++kept_pieces_;
                } else if (one_piece && ops_n_ < ops_.size()) {
                    // One fragment landing within one local page (a small frame): one op.
                    add_copy_op(p.frags[0].gref, p.frags[0].offset, pos, p.frags[0].size);
                } else {
                    // Fragments into the packet's linear buffer, the first e.head bytes of them
                    // (one op per fragment and per local page it reaches: a copy never crosses a
                    // local page; the storage grows once if a batch of many-slot packets needs
                    // more); a direct packet's rest as iovecs into the kept mappings (parse_tx
                    // checked every fragment to lie within its page).
                    const std::size_t max_ops = ops_n_ + e.head / XEN_PAGE_SIZE + 1 + p.nr_frags;
                    if (max_ops > ops_.size()) {
                        ops_.resize(max_ops + kBatchPackets);
                    }
                    std::size_t left = e.head;
                    for (unsigned i = 0; i < p.nr_frags; ++i) {
                        const TxFragment& fr = p.frags[i];
                        const std::size_t copy = std::min<std::size_t>(fr.size, left);
                        left -= copy;
                        if (copy < fr.size) {
                            const std::byte* page = mapper_.kept_page(fr.gref);
                            iovs_.push_back({const_cast<std::byte*>(page) + fr.offset + copy,
                                             fr.size - copy});
                        }
                        std::size_t done = 0;
                        while (done < copy) {
                            const std::size_t in_page = pos % XEN_PAGE_SIZE;
                            const std::size_t n =
                                std::min<std::size_t>(copy - done, XEN_PAGE_SIZE - in_page);
                            add_copy_op(fr.gref, fr.offset + done, pos, n);
                            done += n;
                            pos += n;
                        }
                    }
                }
                e.op_count = static_cast<unsigned>(ops_n_) - e.op_first;
                e.iov_count = static_cast<unsigned>(iovs_.size()) - e.iov_first;
            } else {
                // drop (guest fault, counted) or a multicast filter update (Linux
                // xenvif_tx_build_gops: an add to a full list is answered ERROR, a delete of
                // an address not listed OKAY).
                e.buf = -1;
                e.op_first = e.op_count = 0;
                bool filter_ok = true;
                if (p.verdict == TxVerdict::multicast && mcast_ != nullptr) {
                    if (p.mcast_add) {
                        filter_ok = mcast_->add(p.mcast_addr);
                        if (!filter_ok) {
                            HV_LOG_RL(warn, "netback %s: too many multicast addresses",
                                      name_.c_str());
                        }
                    } else {
                        mcast_->del(p.mcast_addr);
                    }
                }
                e.status = to_netif_status(p.verdict, p.error, filter_ok);
                if (p.verdict == TxVerdict::drop) {
                    VifStats::add(stats_.tx_errors);
                    HV_LOG_RL(warn, "netback %s: tx packet dropped: %s", name_.c_str(),
                              std::string(to_string(p.error)).c_str());
                }
            }
            ++batch_n_;
            pend_head_ += p.slots_consumed;
            view = view.subspan(p.slots_consumed);
        }
        if (!flush(ring, out)) {
            break;
        }
        if (stop || took == 0) {
            break;
        }
    }
    return out;
}

bool TxPath::flush(TxRing& ring, TxRun& out) noexcept {
    if (batch_n_ == 0) {
        return true;
    }
    const std::span<Entry> batch(batch_.data(), batch_n_);
    bool copy_ok = true;
    if (ops_n_ > 0) {
        auto r = run_grant_ops(mode_, mapper_, grants_, frontend_, pages_, {ops_.data(), ops_n_},
                               {stats_.tx_grant_copies, stats_.tx_grant_maps,
                                stats_.tx_grant_pool, stats_.pool_maps});
        if (!r) {
            HV_LOG_RL(error, "netback %s: grant %s: %s", name_.c_str(),
                      mode_ == DataMode::map ? "map" : "copy", r.error().message().c_str());
            copy_ok = false;
        }
    }
    // The copy's verdict for a packet whose ops ran in this flush (entries kept from a busy
    // engine were judged when their ops ran). False: refused.
    auto copied = [&](Entry& e) {
        if (e.copied) {
            return true;
        }
        e.copied = true;
        bool ok = copy_ok;
        const rings::gnttab_copy* op = ops_.data() + e.op_first;
        for (unsigned i = 0; i < e.op_count; ++i) {
            ok = ok && op[i].status == rings::GNTST_okay;
        }
        if (!ok) {
            // GUEST: a bad or foreign grant: the packet is refused, the vif keeps running.
            VifStats::add(stats_.tx_errors);
            HV_LOG_RL(warn, "netback %s: tx grant %s failed", name_.c_str(),
                      mode_ == DataMode::map ? "map" : "copy");
            e.status = rings::NETIF_RSP_ERROR;
            e.done = true;
        }
        return ok;
    };
    // One pass in ring order: the copy's verdict, the offload header, the engine and the
    // packet's responses; statistics, the ring's index and barrier once per batch.
    std::size_t k = 0;
    std::uint64_t sent = 0, sent_bytes = 0;  // statistics: one update per batch
    std::uint64_t direct = 0, direct_pieces = 0;  // sent straight from kept mappings
    for (; k < batch.size(); ++k) {
        Entry& e = batch[k];
        if (e.buf >= 0 && !e.done && copied(e)) {
            std::byte* data = pages_.base + static_cast<std::size_t>(e.buf);
            const std::size_t len = e.pkt.total_size;
            VnetHdr hdr = tx_plain_header(e.pkt);
            bool ok = true;
            if (tx_wants_offload(e.pkt)) {
                // Linux checksum_setup (tx_parse.hpp): csum_start/offset, GSO hdr_len, fixup.
                auto h = tx_offload_header(e.pkt, {reinterpret_cast<std::uint8_t*>(data), e.head},
                                           len, cfg_);
                if (!h) {
                    VifStats::add(stats_.tx_errors);
                    HV_LOG_RL(warn, "netback %s: tx packet dropped: %s", name_.c_str(),
                              std::string(to_string(h.error())).c_str());
                    e.status = rings::NETIF_RSP_ERROR;
                    e.done = true;
                    ok = false;
                } else {
                    hdr = *h;
                }
            }
            if (ok) {
                // The copied head (all of the packet unless direct), then a direct packet's
                // rest.
                send_iov_[0] = {data, e.head};
                if (e.iov_count > 0) {
                    std::copy_n(iovs_.begin() + e.iov_first, e.iov_count, send_iov_.begin() + 1);
                }
                if (auto s = engine_.send(hdr, {send_iov_.data(), 1 + std::size_t{e.iov_count}});
                    !s) {
                    if (s.error() == make_error_code(Errc::busy)) {
                        out.engine_busy = true;  // keep this and the later entries; retry
                        break;
                    }
                    VifStats::add(stats_.tx_dropped);
                    e.status = to_netif_status(TxVerdict::forward, TxError::host_dropped);
                } else {
                    ++sent;
                    sent_bytes += len;
                    direct_pieces += e.iov_count;
                    direct += e.iov_count > 0 ? 1U : 0U;
                    e.status = rings::NETIF_RSP_OKAY;
                }
                e.done = true;
            }
        }
        // The packet is final (sent, refused or dropped): its responses, in ring order.
        const TxPacket& p = e.pkt;
        if (p.slots_consumed == 1) {  // one request slot, no extra: its own response
            ring.put_response({p.frags[0].id, e.status});
            continue;
        }
        const unsigned n = build_tx_responses(p, e.status, rsp_);
        for (unsigned j = 0; j < n; ++j) {
            ring.put_response(rsp_[j]);
        }
    }
    for (std::size_t i = k; i < batch.size(); ++i) {  // the engine was busy: judge the rest now
        if (batch[i].buf >= 0 && !batch[i].done) {
            (void)copied(batch[i]);
        }
    }
    ops_n_ = 0;  // every op of the batch has been carried out and judged
    if (kept_pieces_ + direct_pieces > 0) {
        VifStats::add(stats_.tx_grant_pool, kept_pieces_ + direct_pieces);
        kept_pieces_ = 0;
    }
    if (sent > 0) {
        VifStats::add(stats_.tx_packets, sent);
        VifStats::add(stats_.tx_bytes, sent_bytes);
        VifStats::add(stats_.tx_direct, direct);
    }
    // ORDER: one release store of rsp_prod and one fence for the whole batch.
    if (k > 0 && ring.push_responses()) {
        out.notify = true;
    }
    // The engine was busy: the entries from k on (copied already) move to the front and wait.
    if (k < batch.size()) {
        std::copy(batch.begin() + static_cast<std::ptrdiff_t>(k), batch.end(), batch.begin());
    }
    batch_n_ -= k;
    if (batch_n_ == 0) {
        area_used_ = 0;
        iovs_.clear();
        return true;
    }
    return false;
}

}  // namespace hv::net
