// Map mode's data mover (see map_copy.hpp). Layer: L2. Runs on one Queue's worker thread.
#include "netback/map_copy.hpp"

#include <cstring>

#include "hv/assert.hpp"
#include "hv/log.hpp"

namespace hv::net {

using rings::XEN_PAGE_SIZE;

namespace {

/// Moves one op's bytes between the frontend's mapped page `guest` and our local page.
void move_bytes(rings::gnttab_copy& op, std::byte* guest, const LocalPages& local) noexcept {
    const bool from_guest = (op.flags & rings::GNTCOPY_source_gref) != 0;
    const auto& l = from_guest ? op.dest : op.source;
    std::byte* mine = local.base + (l.u.gmfn - local.first_frame) * XEN_PAGE_SIZE + l.offset;
    // GUEST: the frontend may write its page meanwhile; the bytes land in (or come from) our
    // private copy, which is all that is parsed afterwards.
    if (from_guest) {
        std::memcpy(mine, guest + op.source.offset, op.len);
    } else {
        std::memcpy(guest + op.dest.offset, mine, op.len);
    }
    op.status = rings::GNTST_okay;
}

}  // namespace

Result<void> MapCopier::run(hvmin::Grants& grants, DomId frontend, const LocalPages& local,
                            std::span<rings::gnttab_copy> ops, Counts* counts) noexcept {
    Counts c;
    reqs_.clear();
    keep_req_.clear();
    to_map_.clear();
    maps_.clear();
    // One map request per run of ops on the same grant in the same direction; with the
    // persistent pool, ops on a kept mapping are done here without any request.
    for (std::size_t i = 0; i < ops.size(); ++i) {
        rings::gnttab_copy& op = ops[i];
        const bool from_guest = (op.flags & rings::GNTCOPY_source_gref) != 0;
        const bool to_guest = (op.flags & rings::GNTCOPY_dest_gref) != 0;
        const auto& g = from_guest ? op.source : op.dest;
        const auto& l = from_guest ? op.dest : op.source;
        // Our own ops, but the guest side's offset came from a ring slot: check both sides.
        const bool ok = from_guest != to_guest && g.domid == frontend.get() &&
                        l.domid == rings::DOMID_SELF && l.u.gmfn >= local.first_frame &&
                        l.u.gmfn - local.first_frame < local.pages &&
                        std::size_t{g.offset} + op.len <= XEN_PAGE_SIZE &&
                        std::size_t{l.offset} + op.len <= XEN_PAGE_SIZE;
        if (!ok) {
            op.status = rings::GNTST_bad_copy_arg;
            continue;
        }
        const bool readonly = from_guest;  // tx reads the frontend's page; rx writes it
        bool keep = false;
        if (persistent_) {
            // A kept mapping was checked by hv-min when it was made (ref in range, granted to
            // us by this frontend, writable if kept writable) and stays pinned: the frontend
            // cannot revoke it meanwhile (end_access answers grant_in_use, as in Xen).
            if (const int k = find_kept(g.u.ref); k >= 0) {
                if (readonly || kept_[static_cast<unsigned>(k)].writable) {
                    move_bytes(op, kept_[static_cast<unsigned>(k)].map.data(), local);
                    ++c.pooled;
                    continue;
                }
            } else {
                keep = kept_.size() + reqs_.size() < kMaxKept;
            }
        }
        if (reqs_.empty() || reqs_.back().ref.get() != g.u.ref ||
            reqs_.back().readonly != readonly) {
            reqs_.push_back(hvmin::MapRequest{frontend, GrantRef(g.u.ref), readonly});
            keep_req_.push_back(keep ? 1 : 0);
        }
        to_map_.push_back({static_cast<unsigned>(i), static_cast<unsigned>(reqs_.size() - 1)});
    }
    if (reqs_.empty()) {
        if (counts != nullptr) {
            *counts = c;
        }
        return {};
    }
    auto mapped = grants.map_batch(reqs_);
    if (!mapped) {
        // Ops already moved through kept mappings stand; the others were not carried out.
        if (counts != nullptr) {
            *counts = c;
        }
        return fail(mapped.error());
    }
    for (const auto [i, m] : to_map_) {
        auto& r = (*mapped)[m];
        if (!r) {
            // GUEST: hv-min refused the grant (range, domain, permission): this op fails alone.
            ops[i].status = rings::GNTST_permission_denied;
            continue;
        }
        move_bytes(ops[i], r->data(), local);
        if (keep_req_[m] != 0) {
            ++c.pooled;
        } else {
            ++c.transient;
        }
    }
    for (std::size_t m = 0; m < mapped->size(); ++m) {
        auto& r = (*mapped)[m];
        if (!r) {
            continue;
        }
        if (keep_req_[m] != 0 && find_kept(reqs_[m].ref.get()) < 0) {
            add_kept(Kept{reqs_[m].ref.get(), !reqs_[m].readonly, std::move(*r)});
            ++c.kept_new;
        } else {
            maps_.push_back(std::move(*r));  // a second request for the same grant: transient
        }
    }
    // Unmapped before any response is written: a frontend that revokes after the response finds
    // its grant free, as after a copy.
    if (!maps_.empty()) {
        if (auto u = grants.unmap_batch(maps_); !u) {
            HV_LOG_RL(error, "netback: unmapping %zu frontend grants: %s", maps_.size(),
                      u.error().message().c_str());
        }
    }
    maps_.clear();
    if (counts != nullptr) {
        *counts = c;
    }
    return {};
}

void MapCopier::add_kept(Kept k) noexcept {
    HV_ASSERT(kept_.size() < kMaxKept);
    std::uint32_t h = slot_of(k.ref);
    while (table_[h] != 0) {
        h = (h + 1) & (kTable - 1);
    }
    kept_.push_back(std::move(k));
    table_[h] = static_cast<std::uint16_t>(kept_.size());
}

void MapCopier::drop(hvmin::Grants& grants) noexcept {
    if (kept_.empty()) {
        return;
    }
    maps_.clear();
    for (auto& k : kept_) {
        maps_.push_back(std::move(k.map));
    }
    kept_.clear();
    table_.fill(0);
    if (auto u = grants.unmap_batch(maps_); !u) {
        HV_LOG_RL(error, "netback: unmapping %zu kept frontend grants: %s", maps_.size(),
                  u.error().message().c_str());
    }
    maps_.clear();
}

Result<void> run_grant_ops(DataMode mode, MapCopier& mapper, hvmin::Grants& grants, DomId frontend,
                           const LocalPages& local, std::span<rings::gnttab_copy> ops,
                           const GrantOpCounters& c) noexcept {
    if (mode != DataMode::map) {
        HV_TRY(grants.copy(ops));
        VifStats::add(c.copies, ops.size());
        return {};
    }
    MapCopier::Counts n;
    auto r = mapper.run(grants, frontend, local, ops, &n);
    // Kept mappings made and ops moved through them count even when the batch's map failed.
    VifStats::add(c.pool, n.pooled);
    VifStats::add(c.pool_maps, n.kept_new);
    if (!r) {
        return r;
    }
    VifStats::add(c.maps, ops.size() - n.pooled);
    return {};
}

}  // namespace hv::net
