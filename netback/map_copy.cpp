// Map mode's data mover (see map_copy.hpp). Layer: L2. Runs on one Queue's worker thread.
#include "netback/map_copy.hpp"

#include <climits>
#include <cstring>

#include "hv/log.hpp"

namespace hv::net {

using rings::XEN_PAGE_SIZE;

Result<void> MapCopier::run(hvmin::Grants& grants, DomId frontend, const LocalPages& local,
                            std::span<rings::gnttab_copy> ops) noexcept {
    reqs_.clear();
    map_of_op_.clear();
    maps_.clear();
    // One map request per run of ops on the same grant in the same direction.
    for (auto& op : ops) {
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
            map_of_op_.push_back(UINT_MAX);
            continue;
        }
        const bool readonly = from_guest;  // tx reads the frontend's page; rx writes it
        if (reqs_.empty() || reqs_.back().ref.get() != g.u.ref || reqs_.back().readonly != readonly) {
            reqs_.push_back(hvmin::MapRequest{frontend, GrantRef(g.u.ref), readonly});
        }
        map_of_op_.push_back(static_cast<unsigned>(reqs_.size() - 1));
    }
    if (reqs_.empty()) {
        return {};
    }
    auto mapped = grants.map_batch(reqs_);
    if (!mapped) {
        return fail(mapped.error());
    }
    for (std::size_t i = 0; i < ops.size(); ++i) {
        const unsigned m = map_of_op_[i];
        if (m == UINT_MAX) {
            continue;
        }
        auto& r = (*mapped)[m];
        rings::gnttab_copy& op = ops[i];
        if (!r) {
            // GUEST: hv-min refused the grant (range, domain, permission): this op fails alone.
            op.status = rings::GNTST_permission_denied;
            continue;
        }
        const bool from_guest = (op.flags & rings::GNTCOPY_source_gref) != 0;
        const auto& l = from_guest ? op.dest : op.source;
        std::byte* mine = local.base + (l.u.gmfn - local.first_frame) * XEN_PAGE_SIZE + l.offset;
        // GUEST: the frontend may write its page meanwhile; the bytes land in (or come from) our
        // private copy, which is all that is parsed afterwards.
        if (from_guest) {
            std::memcpy(mine, r->data() + op.source.offset, op.len);
        } else {
            std::memcpy(r->data() + op.dest.offset, mine, op.len);
        }
        op.status = rings::GNTST_okay;
    }
    for (auto& r : *mapped) {
        if (r) {
            maps_.push_back(std::move(*r));
        }
    }
    // Unmapped before any response is written: a frontend that revokes after the response finds
    // its grant free, as after a copy.
    if (auto u = grants.unmap_batch(maps_); !u) {
        HV_LOG_RL(error, "netback: unmapping %zu frontend grants: %s", maps_.size(),
                  u.error().message().c_str());
    }
    maps_.clear();
    return {};
}

}  // namespace hv::net
