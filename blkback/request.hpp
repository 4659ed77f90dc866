// Untrusted blkif ring slot → validated Request (style.md §4, §12; xen-abi.md §5.3), for both
// x86 ABIs, and the one mapping from errors to BLKIF_RSP_*. Layer: L2, data path: pure
// functions on private copies (the worker copies the slot out of shared memory first).
// Any thread; no allocation, no syscalls.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "blkback/engine.hpp"
#include "hv/expected.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/strong.hpp"

namespace hv::blk {

/// Which blkif layout the frontend speaks (xenstore `protocol`): "x86_64-abi" and "arm-abi"
/// are native; "x86_32-abi" puts `id` at offset 4 and makes an entry 108 bytes.
enum class BlkifAbi : std::uint8_t { native, x86_32 };

inline constexpr std::size_t blkif_entry_size(BlkifAbi abi) noexcept {
    return abi == BlkifAbi::native ? sizeof(rings::blkif_request)
                                   : sizeof(rings::blkif_x86_32_request);
}

/// What the vbd offers; parse() checks requests against it.
struct DeviceLimits {
    std::uint64_t sectors = 0;        ///< capacity in 512-byte units (xenstore `sectors`)
    std::uint32_t sector_size = 512;  ///< logical block size: 512 or 4096
    ReadOnly read_only = ReadOnly::no;
    bool flush = true;                ///< feature-flush-cache
    bool barrier = true;              ///< feature-barrier
    bool discard = false;             ///< feature-discard
    bool discard_secure = false;      ///< discard-secure
    std::uint16_t max_indirect_segments = 256;  ///< feature-max-indirect-segments; 0: no INDIRECT
};

enum class RequestKind : std::uint8_t {
    read,
    write,
    flush,    ///< FLUSH_DISKCACHE: flush, then write the segments if any (REQ_PREFLUSH)
    barrier,  ///< WRITE_BARRIER: drain all in flight first, then as flush
    discard,
};

/// One validated data segment: 512-byte sectors first_sect..last_sect of a granted page.
struct Segment {
    GrantRef gref;
    std::uint8_t first_sect = 0;
    std::uint8_t last_sect = 0;
    std::uint32_t offset_bytes() const noexcept { return first_sect * 512U; }
    std::uint32_t len_bytes() const noexcept { return (last_sect - first_sect + 1U) * 512U; }
};

struct Request {
    std::uint64_t id = 0;            ///< echoed verbatim in the response
    std::uint8_t operation = 0;      ///< the response's operation (indirect_op for INDIRECT)
    RequestKind kind = RequestKind::read;
    std::uint16_t handle = 0;        ///< not checked (as Linux)
    std::uint64_t sector_number = 0; ///< 512-byte units
    std::uint64_t nr_sectors = 0;    ///< 512-byte units: sum of segments, or the discard length
    bool secure = false;             ///< DISCARD with BLKIF_DISCARD_SECURE (and offered)
    /// INDIRECT: segments live in indirect pages; call parse_indirect_segments() before use.
    bool indirect = false;
    std::uint16_t nr_segments = 0;
    std::uint8_t nr_indirect_pages = 0;
    std::array<GrantRef, rings::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST> indirect_grefs{};

    std::uint64_t offset_bytes() const noexcept { return sector_number * 512U; }
    std::uint64_t len_bytes() const noexcept { return nr_sectors * 512U; }
    /// The data segments (direct ones, or the indirect ones once parsed). Empty for discard
    /// and for a pure flush.
    std::span<const Segment> segments() const noexcept {
        return {external_ != nullptr ? external_ : direct_.data(), segments_ready_ ? nr_segments : 0U};
    }

private:
    friend struct RequestAccess;
    std::array<Segment, rings::BLKIF_MAX_SEGMENTS_PER_REQUEST> direct_{};
    const Segment* external_ = nullptr;  // the caller's storage for indirect segments
    bool segments_ready_ = false;
};

/// A request that gets an error response without I/O: what to answer, and why.
struct Rejection {
    std::uint64_t id = 0;
    std::uint8_t operation = 0;
    std::error_code error;  ///< Errc::* (guest fault) — to_blkif_status() makes the status
};

/// Validates a private copy of a ring slot. On success every field of Request is checked,
/// except for INDIRECT, whose segments are checked by parse_indirect_segments().
/// Never reads outside the copy; never fails without telling what to answer.
hv::expected<Request, Rejection> parse(const rings::blkif_request& slot,
                                       const DeviceLimits& dev) noexcept;
hv::expected<Request, Rejection> parse(const rings::blkif_x86_32_request& slot,
                                       const DeviceLimits& dev) noexcept;
/// Same over raw bytes (at least blkif_entry_size(abi) of them; otherwise Errc::invalid_argument).
hv::expected<Request, Rejection> parse(std::span<const std::byte> slot, BlkifAbi abi,
                                       const DeviceLimits& dev) noexcept;

/// Second stage of INDIRECT: `pages` is the private copy of the request's indirect pages
/// (nr_indirect_pages × 4096 bytes, in indirect_grefs order). Copies nr_segments segments into
/// `storage` (size ≥ nr_segments; must outlive `req`'s use), validates them and the range, and
/// points req.segments() at them.
hv::expected<void, Rejection> parse_indirect_segments(Request& req,
                                                      std::span<const std::byte> pages,
                                                      std::span<Segment> storage,
                                                      const DeviceLimits& dev) noexcept;

/// The one place errors become wire status: no error → BLKIF_RSP_OKAY; "not supported"
/// (Errc::unsupported_op, or EOPNOTSUPP from storage) → BLKIF_RSP_EOPNOTSUPP; anything else,
/// guest fault or host I/O error alike → BLKIF_RSP_ERROR.
std::int16_t to_blkif_status(std::error_code ec) noexcept;
/// The same for an engine completion result (bytes ≥ 0, or -errno).
std::int16_t to_blkif_status(std::int32_t completion_result) noexcept;

}  // namespace hv::blk
