// Guest-RX path (see rx.hpp). Layer: L2. Runs on one Queue's worker thread.
#include "netback/rx.hpp"

#include <algorithm>
#include <cstring>

#include "hv/log.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hvmin/client.hpp"

namespace hv::net {

using rings::XEN_PAGE_SIZE;

RxPacketInfo rx_info_from_vnet(const VnetHdr& h, std::size_t len) noexcept {
    RxPacketInfo i;
    i.len = len;
    i.csum_blank = (h.flags & VnetHdr::F_NEEDS_CSUM) != 0;
    i.data_validated = i.csum_blank || (h.flags & VnetHdr::F_DATA_VALID) != 0;
    switch (h.gso_type & ~VnetHdr::GSO_ECN) {
        case VnetHdr::GSO_TCPV4:
            i.gso_type = rings::XEN_NETIF_GSO_TYPE_TCPV4;
            i.gso_size = h.gso_size;
            break;
        case VnetHdr::GSO_TCPV6:
            i.gso_type = rings::XEN_NETIF_GSO_TYPE_TCPV6;
            i.gso_size = h.gso_size;
            break;
        default:
            break;
    }
    return i;
}

RxPath::RxPath(hvmin::Grants& grants, NetEngine& engine, VifStats& stats, DomId frontend,
               RxFrontend fe, LocalPages pages, std::chrono::milliseconds drain_timeout,
               std::string name, DataMode mode, bool persistent)
    : grants_(grants),
      engine_(engine),
      stats_(stats),
      frontend_(frontend),
      fe_(fe),
      pages_(pages),
      drain_timeout_(drain_timeout),
      name_(std::move(name)),
      mode_(mode) {
    reqs_.resize(64);
    slots_.resize(64);
    rsps_.reserve(rings::ring_entries_for_pages<rings::NetifRxProtocol>(1));
    ops_.reserve(kMaxOps);
    pend_.reserve(256);
    mapper_.set_persistent(persistent && mode == DataMode::map);
}

RxPath::~RxPath() { mapper_.drop(grants_); }

void RxPath::drop_held(const char* why) noexcept {
    VifStats::add(stats_.rx_dropped);
    HV_LOG_RL(warn, "netback %s: rx frame dropped: %s", name_.c_str(), why);
    have_ = false;
    held_ = false;
}

bool RxPath::filter_passes(std::span<const std::byte> frame) noexcept {
    if (mcast_ == nullptr || mcast_->accepts(frame)) {
        return true;
    }
    VifStats::add(stats_.rx_dropped);
    return false;
}

void RxPath::refresh_hash() noexcept {
    if (hash_ == nullptr || hash_->generation() == hash_gen_) {
        return;
    }
    hash_gen_ = hash_->read(hash_settings_);
    hashing_ = hash_settings_.algorithm == rings::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ &&
               hash_settings_.flags != 0;
}

void RxPath::add_hash(RxPacketInfo& info, std::span<const std::byte> head) const noexcept {
    if (!hashing_) {
        return;
    }
    const auto h = flow_hash(hash_settings_,
                             {reinterpret_cast<const std::uint8_t*>(head.data()), head.size()});
    if (h) {
        info.has_hash = true;
        info.hash_type = h->type;
        info.hash_value = h->value;
    }
}

RxRun RxPath::run(RxRing& ring, Clock::time_point now) noexcept {
    RxRun out;
    refresh_hash();
    const std::size_t area = pages_.pages * XEN_PAGE_SIZE;
    const std::size_t max_frame = engine_.max_frame_bytes();
    unsigned drops = 0;
    for (;;) {
        if (!have_ && mapper_.persistent() && !direct_unsupported_) {
            const Direct d = read_direct(ring, out);
            if (d == Direct::nothing || (d == Direct::dropped && ++drops >= kMaxDropsPerRun)) {
                break;  // (dropped frames take no rx request: bounded like the copy path's)
            }
            if (d != Direct::unavailable) {
                continue;
            }
        }
        if (!have_) {
            if (area_used_ + max_frame > area) {
                flush(ring, out);  // the area is about to be reused: copy it out first
            }
            if (area_used_ + max_frame > area) {
                break;  // cannot happen: flush() empties the area when no frame is held
            }
            if (!engine_ready_) {
                break;  // read empty and not found readable since
            }
            buf_.data = {pages_.base + area_used_, max_frame};
            auto n = engine_.receive({&buf_, 1});
            if (!n || *n == 0) {
                engine_ready_ = !n.has_value();  // an error is reported again by the next read
                break;
            }
            if (!filter_passes(buf_.data.first(buf_.len))) {
                // Its bytes stay in the area, unused: the next read overwrites them. Bounded:
                // filtered frames take no rx request, so a flood would never end the pass.
                if (++drops >= kMaxDropsPerRun) {
                    break;
                }
                continue;
            }
            have_ = true;
        }
        const RxBuffer& b = buf_;
        RxPacketInfo info = rx_info_from_vnet(b.hdr, b.len);
        add_hash(info, b.data.first(b.len));
        auto need = rx_slots_needed(info, fe_);
        if (!need) {
            // A frame the frontend cannot take (too big without sg, an unadvertised GSO
            // type): dropped, as Linux does for what it cannot segment.
            VifStats::add(stats_.rx_dropped);
            HV_LOG_RL(warn, "netback %s: rx frame of %u bytes dropped: %s", name_.c_str(),
                      b.len, need.error().message().c_str());
            have_ = false;
            continue;
        }
        auto avail = ring.unconsumed();
        if (!avail) {
            out.fatal = true;
            out.reason = "rx ring: " + avail.error().message();
            flush(ring, out);
            return out;
        }
        if (*avail + reserved() < *need) {
            flush(ring, out);
            if (stalled_ && drops < kMaxDropsPerRun) {
                // Queued behind the expired frame as long as it was (Linux drops every
                // expired skb of a stalled queue): dropped without a new wait.
                ++drops;
                drop_held("the frontend posts no rx buffers");
                continue;
            }
            if (!held_) {
                held_ = true;
                held_since_ = now;
            }
            if (now - held_since_ >= drain_timeout_) {
                drop_held("the frontend posts no rx buffers");
                stalled_ = true;
                continue;
            }
            out.waiting_for = *need - reserved();  // more than the ring holds now
            return out;
        }
        held_ = false;
        stalled_ = false;
        if (ops_.size() + 2 * *need > kMaxOps || pend_.size() == pend_.capacity()) {
            flush(ring, out);
        }
        for (unsigned i = 0; i < *need; ++i) {
            reqs_[i] = next_request(ring);
        }
        auto used = build_rx_slots(info, fe_, {reqs_.data(), *need}, slots_);
        HV_ASSERT(used && *used == *need);
        Pending p;
        p.first_rsp = static_cast<unsigned>(rsps_.size());
        p.nr_rsp = *need;
        p.op_first = static_cast<unsigned>(ops_.size());
        p.len = b.len;
        const std::size_t base_off = area_used_;  // the frame's offset in the local pages
        for (unsigned i = 0; i < *need; ++i) {
            const RxSlot& s = slots_[i];
            rsps_.push_back(s.rsp);
            if (s.extra || s.copy_len == 0) {
                continue;
            }
            std::size_t done = 0;
            while (done < s.copy_len) {
                const std::size_t src = base_off + s.src_offset + done;
                const std::size_t in_page = src % XEN_PAGE_SIZE;
                const std::size_t n =
                    std::min<std::size_t>(s.copy_len - done, XEN_PAGE_SIZE - in_page);
                rings::gnttab_copy op{};
                op.source.u.gmfn = pages_.first_frame + src / XEN_PAGE_SIZE;
                op.source.domid = rings::DOMID_SELF;
                op.source.offset = static_cast<std::uint16_t>(in_page);
                op.dest.u.ref = s.gref;
                op.dest.domid = frontend_.get();
                op.dest.offset = static_cast<std::uint16_t>(s.rsp.offset + done);
                op.len = static_cast<std::uint16_t>(n);
                op.flags = rings::GNTCOPY_dest_gref;
                ops_.push_back(op);
                done += n;
            }
        }
        p.op_count = static_cast<unsigned>(ops_.size()) - p.op_first;
        pend_.push_back(p);
        area_used_ += (std::size_t{b.len} + kAlign - 1) / kAlign * kAlign;
        have_ = false;
    }
    flush(ring, out);
    return out;
}

rings::netif_rx_request RxPath::next_request(RxRing& ring) noexcept {
    if (reserve_head_ < reserve_.size()) {
        return reserve_[reserve_head_++];
    }
    auto r = ring.take_request();  // GUEST: copied once by the ring
    HV_ASSERT(r.has_value());
    return *r;
}

RxPath::Direct RxPath::read_direct(RxRing& ring, RxRun& out) noexcept {
    const std::size_t max_frame = engine_.max_frame_bytes();
    const auto data_pages = static_cast<unsigned>((max_frame + XEN_PAGE_SIZE - 1) / XEN_PAGE_SIZE);
    const unsigned room = hashing_ ? 2U : 1U;  // requests left for a GSO (and a HASH) extra
    const unsigned slots = data_pages + room;
    if (data_pages > kMaxDirectPages || !fe_.sg || data_pages > fe_.max_slots ||
        fe_.headroom != 0) {
        return Direct::unavailable;
    }
    if (!engine_ready_) {
        return Direct::nothing;  // read empty and not found readable since
    }
    auto avail = ring.unconsumed();
    if (!avail || *avail + reserved() < slots) {
        return Direct::unavailable;  // a broken index is the copy path's to report
    }
    if (pend_.size() == pend_.capacity()) {
        flush(ring, out);
    }
    if (reserve_head_ == reserve_.size()) {
        reserve_.clear();
        reserve_head_ = 0;
    }
    while (reserved() < slots) {
        auto r = ring.take_request();  // GUEST: copied once by the ring; only the copy is used
        HV_ASSERT(r.has_value());
        reserve_.push_back(*r);
    }
    const rings::netif_rx_request* req = reserve_.data() + reserve_head_;
    for (unsigned j = 0; j < slots; ++j) {
        direct_pages_[j] = mapper_.kept_writable_page(req[j].gref);
        if (direct_pages_[j] == nullptr) {
            return Direct::unavailable;  // the copy path maps it (and keeps it) first
        }
    }
    // Data slot 0 in request 0, the others after the room for extras.
    for (unsigned k = 0; k < data_pages; ++k) {
        direct_iov_[k] = {direct_pages_[k == 0 ? 0 : k + room], XEN_PAGE_SIZE};
    }
    VnetHdr hdr{};
    auto n = engine_.receive_scattered(hdr, {direct_iov_.data(), data_pages});
    if (!n) {
        direct_unsupported_ = n.error() == std::errc::operation_not_supported;
        return Direct::unavailable;  // the copy path reads (and reports) instead
    }
    if (*n == 0) {
        engine_ready_ = false;
        return Direct::nothing;
    }
    if (!filter_passes({direct_pages_[0], std::min<std::size_t>(*n, XEN_PAGE_SIZE)})) {
        return Direct::dropped;  // as below: the requests stay for the next frame
    }
    RxPacketInfo info = rx_info_from_vnet(hdr, *n);
    add_hash(info, {direct_pages_[0], std::min<std::size_t>(*n, XEN_PAGE_SIZE)});
    auto need = rx_slots_needed(info, fe_);
    if (!need) {
        // As on the copy path. The bytes went into buffers this frontend posted for this vif.
        VifStats::add(stats_.rx_dropped);
        HV_LOG_RL(warn, "netback %s: rx frame of %zu bytes dropped: %s", name_.c_str(), *n,
                  need.error().message().c_str());
        return Direct::dropped;
    }
    const auto pages = static_cast<unsigned>((*n + XEN_PAGE_SIZE - 1) / XEN_PAGE_SIZE);
    const unsigned extras =
        (info.gso_type != rings::XEN_NETIF_GSO_TYPE_NONE ? 1U : 0U) + (info.has_hash ? 1U : 0U);
    if (extras < room) {
        // Fewer extras than the room left: data slot k belongs in request k + extras. (Only
        // frames over a page.) memmove, in ascending order as the pages move down: a hostile
        // frontend may post one page twice.
        for (unsigned k = 1; k < pages; ++k) {
            std::memmove(direct_pages_[k + extras], direct_pages_[k + room], XEN_PAGE_SIZE);
        }
    }
    auto used = build_rx_slots(info, fe_, {req, *need}, slots_);
    HV_ASSERT(used && *used == *need && *need <= slots);
    Pending p;
    p.first_rsp = static_cast<unsigned>(rsps_.size());
    p.nr_rsp = *need;
    p.op_first = static_cast<unsigned>(ops_.size());
    p.op_count = 0;
    p.len = *n;
    for (unsigned i = 0; i < *need; ++i) {
        rsps_.push_back(slots_[i].rsp);
    }
    pend_.push_back(p);
    reserve_head_ += *need;
    held_ = false;
    stalled_ = false;
    VifStats::add(stats_.rx_direct);
    VifStats::add(stats_.rx_grant_pool, pages);
    return Direct::delivered;
}

void RxPath::flush(RxRing& ring, RxRun& out) noexcept {
    if (pend_.empty()) {
        if (!have_) {
            area_used_ = 0;
        }
        return;
    }
    bool copy_ok = true;
    if (!ops_.empty()) {
        auto r = run_grant_ops(mode_, mapper_, grants_, frontend_, pages_, ops_,
                               {stats_.rx_grant_copies, stats_.rx_grant_maps,
                                stats_.rx_grant_pool, stats_.pool_maps});
        if (!r) {
            HV_LOG_RL(error, "netback %s: rx grant %s: %s", name_.c_str(),
                      mode_ == DataMode::map ? "map" : "copy", r.error().message().c_str());
            copy_ok = false;
        }
    }
    for (const Pending& p : pend_) {
        bool ok = p.op_count == 0 || copy_ok;  // a direct frame has no op
        for (unsigned i = 0; ok && i < p.op_count; ++i) {
            ok = ops_[p.op_first + i].status == rings::GNTST_okay;
        }
        if (ok) {
            VifStats::add(stats_.rx_packets);
            VifStats::add(stats_.rx_bytes, p.len);
        } else {
            // GUEST: a bad rx grant. The frontend sees an error status in the packet's first
            // slot (Linux writes the GNTST code into the failed slot) and drops it.
            VifStats::add(stats_.rx_dropped);
            HV_LOG_RL(warn, "netback %s: rx grant %s failed", name_.c_str(),
                      mode_ == DataMode::map ? "map" : "copy");
            rsps_[p.first_rsp].status = rings::NETIF_RSP_ERROR;
        }
    }
    // Responses land in the ring index of the request each consumed: requests were taken in
    // order and rsp_prod_pvt == req_cons before each packet, so put_response's slot is the
    // request's slot (sharp edge 12). Extras overlay a response with a netif_extra_info.
    for (const auto& r : rsps_) {
        ring.put_response(r);
    }
    if (ring.push_responses()) {
        out.notify = true;
    }
    rsps_.clear();
    ops_.clear();
    pend_.clear();
    if (!have_) {
        area_used_ = 0;  // a held frame stays where it is; the area restarts after it
    }
}

}  // namespace hv::net
