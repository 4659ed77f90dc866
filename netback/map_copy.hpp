// Map mode's data mover for a trusted netback (design §4, §8): carries out a batch of
// GNTTABOP_copy-shaped ops by mapping each op's frontend grant (one GNTTABOP_map_grant_ref
// batch), moving the bytes with memcpy, and unmapping (one GNTTABOP_unmap_grant_ref batch)
// before returning, so the frontend may revoke its grants as soon as it sees the responses.
// With the frontend's persistent pool (feature-hvkit-persistent-pool, netback/README.md) the
// grants it names are mapped once and kept until drop(): the data path is then memcpy only.
// Layer: L2. Threads: one Queue's worker (it owns the Grants passed in).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <array>
#include <bit>
#include <vector>

#include "hv/expected.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/strong.hpp"
#include "hvmin/client.hpp"
#include "netback/metrics.hpp"

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
    /// Mappings kept per queue at most: netfront's pool is one page per tx and per rx ring
    /// slot (2 x 256), so an honest frontend fits and a hostile one pins no more than that;
    /// grants beyond it go through a mapping made and dropped within the batch.
    static constexpr std::size_t kMaxKept = 512;

    /// What one run() did (for the statistics).
    struct Counts {
        std::uint64_t pooled = 0;     ///< ops moved through a kept mapping
        std::uint64_t transient = 0;  ///< ops moved through a mapping dropped within the batch
        std::uint64_t kept_new = 0;   ///< grants mapped and kept by this run
    };

    /// Keep mappings across batches (the frontend's persistent pool). Set before the first run.
    void set_persistent(bool on) noexcept { persistent_ = on; }
    bool persistent() const noexcept { return persistent_; }

    Result<void> run(hvmin::Grants& grants, DomId frontend, const LocalPages& local,
                     std::span<rings::gnttab_copy> ops, Counts* counts = nullptr) noexcept;
    /// Unmaps every kept mapping (one batch); call before `grants` goes away (disconnect).
    void drop(hvmin::Grants& grants) noexcept;
    std::size_t kept() const noexcept { return kept_.size(); }
    /// The page of `ref`'s kept mapping (read-only or writable), or nullptr: valid until
    /// drop(). GUEST: the frontend may write it at any time; only what is copied out is
    /// stable.
    const std::byte* kept_page(std::uint32_t ref) const noexcept {
        const int k = persistent_ ? find_kept(ref) : -1;
        return k < 0 ? nullptr : kept_[static_cast<unsigned>(k)].map.data();
    }
    /// As kept_page(), for a mapping kept writable (an rx buffer), else nullptr.
    std::byte* kept_writable_page(std::uint32_t ref) noexcept {
        const int k = persistent_ ? find_kept(ref) : -1;
        return k < 0 || !kept_[static_cast<unsigned>(k)].writable
                   ? nullptr
                   : kept_[static_cast<unsigned>(k)].map.data();
    }

private:
    struct Kept {
        std::uint32_t ref = 0;
        bool writable = false;
        hvmin::GrantMapping map;
    };
    /// Index of `ref`'s kept mapping in kept_, or -1. An open-addressing table (linear probing,
    /// never deleted from but as a whole): a lookup per op is a hash and a compare or two.
    int find_kept(std::uint32_t ref) const noexcept {
        for (std::uint32_t h = slot_of(ref);; h = (h + 1) & (kTable - 1)) {
            const std::uint16_t k = table_[h];
            if (k == 0) {
                return -1;
            }
            if (kept_[k - 1U].ref == ref) {
                return k - 1;
            }
        }
    }
    void add_kept(Kept k) noexcept;
    static constexpr std::uint32_t kTable = 2 * kMaxKept;  ///< power of two, half full at most
    static std::uint32_t slot_of(std::uint32_t ref) noexcept {
        return (ref * 0x9E3779B1U) >> (32 - std::countr_zero(kTable));
    }
    bool persistent_ = false;
    std::vector<Kept> kept_;  ///< persistent only; at most kMaxKept
    std::array<std::uint16_t, kTable> table_{};  ///< 0 = empty, else 1 + index into kept_
    std::vector<std::uint8_t> keep_req_;  ///< per reqs_ entry: 1 = keep the mapping
    std::vector<hvmin::MapRequest> reqs_;
    struct OpToMap {
        unsigned op;   ///< index into the ops
        unsigned req;  ///< its mapping: index into reqs_
    };
    std::vector<OpToMap> to_map_;  ///< ops that need a mapping made for this run (in order)
    std::vector<hvmin::GrantMapping> maps_;
};

/// One direction's counters of VifStats (tx or rx).
struct GrantOpCounters {
    std::atomic<std::uint64_t>& copies;
    std::atomic<std::uint64_t>& maps;
    std::atomic<std::uint64_t>& pool;
    std::atomic<std::uint64_t>& pool_maps;
};

/// Carries out `ops` the way `mode` says (GNTTABOP_copy, or `mapper`) and counts them into `c`
/// when the transport succeeded. The Result is the transport's; op statuses say the rest.
Result<void> run_grant_ops(DataMode mode, MapCopier& mapper, hvmin::Grants& grants, DomId frontend,
                           const LocalPages& local, std::span<rings::gnttab_copy> ops,
                           const GrantOpCounters& c) noexcept;

}  // namespace hv::net
