// Map mode's data mover for a trusted netback (design §4, §8): carries out a batch of
// GNTTABOP_copy-shaped ops by mapping each op's frontend grant (one GNTTABOP_map_grant_ref
// batch), moving the bytes with memcpy, and unmapping (one GNTTABOP_unmap_grant_ref batch)
// before returning, so the frontend may revoke its grants as soon as it sees the responses.
// Layer: L2. Threads: one Queue's worker (it owns the Grants passed in).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "hv/expected.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/strong.hpp"
#include "hvmin/client.hpp"

namespace hv::net {

/// How a queue moves packet bytes between the frontend's grants and its own pages.
enum class DataMode : std::uint8_t {
    copy,  ///< GNTTABOP_copy through hv-min: every domain, and the only way for an isolated one
    map,   ///< trusted: map the grants, memcpy, unmap (hv-min checks every grant at map time)
};

/// The local side of a batch: this queue's own frames [first_frame, first_frame + pages),
/// mapped contiguously at `base`.
struct LocalPages {
    std::uint64_t first_frame = 0;
    std::byte* base = nullptr;
    std::size_t pages = 0;
};

/// Executes `ops` (each GNTCOPY_source_gref from `frontend` to a local frame, or
/// GNTCOPY_dest_gref from a local frame to `frontend`) through mappings and fills each op's
/// `status` as a copy hypercall would: GNTST_okay, or an error when the grant could not be
/// mapped (a ref beyond the table, not granted to us, granted by another domain, read-only for a
/// write) or the op names memory outside its page or the local pages. Consecutive ops on the
/// same grant share one mapping. The Result is the transport's (then no op was carried out).
/// `scratch` keeps its capacity between calls.
class MapCopier {
public:
    Result<void> run(hvmin::Grants& grants, DomId frontend, const LocalPages& local,
                     std::span<rings::gnttab_copy> ops) noexcept;

private:
    std::vector<hvmin::MapRequest> reqs_;
    std::vector<unsigned> map_of_op_;   ///< per op: index into reqs_ (UINT_MAX: op invalid)
    std::vector<hvmin::GrantMapping> maps_;
};

}  // namespace hv::net
