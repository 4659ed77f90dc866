// Block interface wire format (io/blkif.h, xen-abi.md §5): the native x86_64 layout and the
// x86_32 layout Linux blkback also serves (xen-blkback/common.h names). Layer: L0, header-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "hv/rings/ring.hpp"

namespace hv::rings {

using blkif_vdev_t = std::uint16_t;
using blkif_sector_t = std::uint64_t;

// SPEC: io/blkif.h operations.
inline constexpr std::uint8_t BLKIF_OP_READ = 0;
inline constexpr std::uint8_t BLKIF_OP_WRITE = 1;
inline constexpr std::uint8_t BLKIF_OP_WRITE_BARRIER = 2;
inline constexpr std::uint8_t BLKIF_OP_FLUSH_DISKCACHE = 3;
inline constexpr std::uint8_t BLKIF_OP_RESERVED_1 = 4;
inline constexpr std::uint8_t BLKIF_OP_DISCARD = 5;
inline constexpr std::uint8_t BLKIF_OP_INDIRECT = 6;

inline constexpr unsigned BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
inline constexpr unsigned BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;
inline constexpr std::uint8_t BLKIF_DISCARD_SECURE = 1U << 0;

inline constexpr std::int16_t BLKIF_RSP_EOPNOTSUPP = -2;
inline constexpr std::int16_t BLKIF_RSP_ERROR = -1;
inline constexpr std::int16_t BLKIF_RSP_OKAY = 0;

inline constexpr std::uint32_t VDISK_CDROM = 0x1;
inline constexpr std::uint32_t VDISK_REMOVABLE = 0x2;
inline constexpr std::uint32_t VDISK_READONLY = 0x4;

/// Sectors are always 512 bytes on the wire, whatever `sector-size` says.
inline constexpr unsigned BLKIF_SECTOR_SIZE = 512;
inline constexpr unsigned BLKIF_SECTORS_PER_PAGE = XEN_PAGE_SIZE / BLKIF_SECTOR_SIZE;

/// One granted data page: sectors first_sect..last_sect (inclusive, 0..7) of it.
struct blkif_request_segment {
    std::uint32_t gref;  // grant_ref_t
    std::uint8_t first_sect;
    std::uint8_t last_sect;
};
static_assert(sizeof(blkif_request_segment) == 8);
static_assert(offsetof(blkif_request_segment, first_sect) == 4);
static_assert(offsetof(blkif_request_segment, last_sect) == 5);

/// Segments packed in one indirect page.
inline constexpr unsigned BLKIF_SEGS_PER_INDIRECT_FRAME =
    XEN_PAGE_SIZE / sizeof(blkif_request_segment);

// ---- native (x86_64, arm) layout ----------------------------------------------------------

/// READ / WRITE / WRITE_BARRIER / FLUSH_DISKCACHE request; also the ring's request type.
struct blkif_request {
    std::uint8_t operation;
    std::uint8_t nr_segments;
    blkif_vdev_t handle;
    std::uint64_t id;
    blkif_sector_t sector_number;
    blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
static_assert(sizeof(blkif_request) == 112);
static_assert(offsetof(blkif_request, nr_segments) == 1);
static_assert(offsetof(blkif_request, handle) == 2);
static_assert(offsetof(blkif_request, id) == 8);
static_assert(offsetof(blkif_request, sector_number) == 16);
static_assert(offsetof(blkif_request, seg) == 24);

struct blkif_request_discard {
    std::uint8_t operation;
    std::uint8_t flag;
    blkif_vdev_t handle;
    std::uint64_t id;
    blkif_sector_t sector_number;
    std::uint64_t nr_sectors;
};
static_assert(sizeof(blkif_request_discard) == 32);
static_assert(offsetof(blkif_request_discard, flag) == 1);
static_assert(offsetof(blkif_request_discard, handle) == 2);
static_assert(offsetof(blkif_request_discard, id) == 8);
static_assert(offsetof(blkif_request_discard, sector_number) == 16);
static_assert(offsetof(blkif_request_discard, nr_sectors) == 24);

struct blkif_request_indirect {
    std::uint8_t operation;
    std::uint8_t indirect_op;
    std::uint16_t nr_segments;
    std::uint64_t id;
    blkif_sector_t sector_number;
    blkif_vdev_t handle;
    std::uint32_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
};
static_assert(sizeof(blkif_request_indirect) == 64);
static_assert(offsetof(blkif_request_indirect, indirect_op) == 1);
static_assert(offsetof(blkif_request_indirect, nr_segments) == 2);
static_assert(offsetof(blkif_request_indirect, id) == 8);
static_assert(offsetof(blkif_request_indirect, sector_number) == 16);
static_assert(offsetof(blkif_request_indirect, handle) == 24);
static_assert(offsetof(blkif_request_indirect, indirect_grefs) == 28);

struct blkif_response {
    std::uint64_t id;
    std::uint8_t operation;
    std::int16_t status;
};
static_assert(sizeof(blkif_response) == 16);
static_assert(offsetof(blkif_response, operation) == 8);
static_assert(offsetof(blkif_response, status) == 10);

// ---- x86_32 layout (64-bit fields 4-byte aligned) ----------------------------------------
// These are packed to 4: read their 64-bit members by value (`std::uint64_t id = req.id;`);
// never bind a reference or pointer to them (misaligned: UB, and UBSan says so).

#pragma pack(push, 4)
struct blkif_x86_32_request {
    std::uint8_t operation;
    std::uint8_t nr_segments;
    blkif_vdev_t handle;
    std::uint64_t id;
    blkif_sector_t sector_number;
    blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
struct blkif_x86_32_request_discard {
    std::uint8_t operation;
    std::uint8_t flag;
    blkif_vdev_t handle;
    std::uint64_t id;
    blkif_sector_t sector_number;
    std::uint64_t nr_sectors;
};
struct blkif_x86_32_request_indirect {
    std::uint8_t operation;
    std::uint8_t indirect_op;
    std::uint16_t nr_segments;
    std::uint64_t id;
    blkif_sector_t sector_number;
    blkif_vdev_t handle;
    std::uint32_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
    std::uint64_t pad;  // io/blkif.h: "Make it 64 byte aligned on i386"
};
struct blkif_x86_32_response {
    std::uint64_t id;
    std::uint8_t operation;
    std::int16_t status;
};
#pragma pack(pop)
static_assert(sizeof(blkif_x86_32_request) == 108);
static_assert(offsetof(blkif_x86_32_request, handle) == 2);
static_assert(offsetof(blkif_x86_32_request, id) == 4);
static_assert(offsetof(blkif_x86_32_request, sector_number) == 12);
static_assert(offsetof(blkif_x86_32_request, seg) == 20);
static_assert(sizeof(blkif_x86_32_request_discard) == 28);
static_assert(offsetof(blkif_x86_32_request_discard, id) == 4);
static_assert(offsetof(blkif_x86_32_request_discard, sector_number) == 12);
static_assert(offsetof(blkif_x86_32_request_discard, nr_sectors) == 20);
static_assert(sizeof(blkif_x86_32_request_indirect) == 64);
static_assert(offsetof(blkif_x86_32_request_indirect, nr_segments) == 2);
static_assert(offsetof(blkif_x86_32_request_indirect, id) == 4);
static_assert(offsetof(blkif_x86_32_request_indirect, sector_number) == 12);
static_assert(offsetof(blkif_x86_32_request_indirect, handle) == 20);
static_assert(offsetof(blkif_x86_32_request_indirect, indirect_grefs) == 24);
static_assert(offsetof(blkif_x86_32_request_indirect, pad) == 56);
static_assert(sizeof(blkif_x86_32_response) == 12);
static_assert(offsetof(blkif_x86_32_response, operation) == 8);
static_assert(offsetof(blkif_x86_32_response, status) == 10);

/// Views a request slot as one of the per-operation layouts that overlay it (the C code casts;
/// we copy, so the result is a private copy like the request itself).
template <class View, class Request>
View blkif_view_as(const Request& req) noexcept {
    static_assert(sizeof(View) <= sizeof(Request) && std::is_trivially_copyable_v<View>);
    View v;
    std::memcpy(&v, &req, sizeof v);
    return v;
}

// ---- ring protocols ------------------------------------------------------------------------

/// blkif, native 64-bit ABI ("x86_64-abi", also "arm-abi"). Entry 112 bytes; 32 slots per page.
struct BlkifProtocol {
    using request = blkif_request;
    using response = blkif_response;
    static constexpr std::string_view name = "blkif";
    static constexpr std::string_view abi = "x86_64-abi";
};

/// blkif, 32-bit x86 ABI ("x86_32-abi"). Entry 108 bytes; 32 slots per page.
struct BlkifX86_32Protocol {
    using request = blkif_x86_32_request;
    using response = blkif_x86_32_response;
    static constexpr std::string_view name = "blkif-x86_32";
    static constexpr std::string_view abi = "x86_32-abi";
};

inline constexpr std::string_view XEN_IO_PROTO_ABI_X86_32 = "x86_32-abi";
inline constexpr std::string_view XEN_IO_PROTO_ABI_X86_64 = "x86_64-abi";
inline constexpr std::string_view XEN_IO_PROTO_ABI_ARM = "arm-abi";

static_assert(entry_size<BlkifProtocol> == 112);
static_assert(entry_size<BlkifX86_32Protocol> == 108);
static_assert(ring_entries_for_pages<BlkifProtocol>(1) == 32);
static_assert(ring_entries_for_pages<BlkifProtocol>(16) == 512);
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(1) == 32);
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(16) == 512);

}  // namespace hv::rings
