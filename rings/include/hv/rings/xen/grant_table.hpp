// Grant table v1 ABI (xen/include/public/grant_table.h): entries, flags, ops and statuses.
// Layer: rings (L0). Header-only, no syscalls. Every layout is checked against xen-abi.md §2.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hv/rings/xen/xen.hpp"

namespace hv::rings {

using grant_ref_t = std::uint32_t;
using grant_handle_t = std::uint32_t;

/// One v1 grant entry: the granter writes domid and frame, then (after a release fence) flags.
struct grant_entry_v1 {
    std::uint16_t flags;
    domid_t domid;
    std::uint32_t frame;
};
static_assert(sizeof(grant_entry_v1) == 8);
static_assert(offsetof(grant_entry_v1, flags) == 0);
static_assert(offsetof(grant_entry_v1, domid) == 2);
static_assert(offsetof(grant_entry_v1, frame) == 4);

inline constexpr std::uint32_t GRANT_ENTRIES_PER_FRAME = XEN_PAGE_SIZE / sizeof(grant_entry_v1);
static_assert(GRANT_ENTRIES_PER_FRAME == 512);

inline constexpr grant_ref_t GNTTAB_NR_RESERVED_ENTRIES = 8;
inline constexpr grant_ref_t GNTTAB_RESERVED_CONSOLE = 0;
inline constexpr grant_ref_t GNTTAB_RESERVED_XENSTORE = 1;

// SPEC: grant_table.h GTF_*
inline constexpr std::uint16_t GTF_invalid = 0;
inline constexpr std::uint16_t GTF_permit_access = 1;
inline constexpr std::uint16_t GTF_accept_transfer = 2;
inline constexpr std::uint16_t GTF_transitive = 3;
inline constexpr std::uint16_t GTF_type_mask = 3;
inline constexpr std::uint16_t GTF_readonly = 1u << 2;
inline constexpr std::uint16_t GTF_reading = 1u << 3;
inline constexpr std::uint16_t GTF_writing = 1u << 4;
inline constexpr std::uint16_t GTF_PWT = 1u << 5;
inline constexpr std::uint16_t GTF_PCD = 1u << 6;
inline constexpr std::uint16_t GTF_PAT = 1u << 7;
inline constexpr std::uint16_t GTF_sub_page = 1u << 8;
inline constexpr std::uint16_t GTF_transfer_committed = 1u << 2;
inline constexpr std::uint16_t GTF_transfer_completed = 1u << 3;

// SPEC: grant_table.h GNTTABOP_*
inline constexpr std::uint32_t GNTTABOP_map_grant_ref = 0;
inline constexpr std::uint32_t GNTTABOP_unmap_grant_ref = 1;
inline constexpr std::uint32_t GNTTABOP_setup_table = 2;
inline constexpr std::uint32_t GNTTABOP_dump_table = 3;
inline constexpr std::uint32_t GNTTABOP_transfer = 4;
inline constexpr std::uint32_t GNTTABOP_copy = 5;
inline constexpr std::uint32_t GNTTABOP_query_size = 6;
inline constexpr std::uint32_t GNTTABOP_unmap_and_replace = 7;
inline constexpr std::uint32_t GNTTABOP_set_version = 8;
inline constexpr std::uint32_t GNTTABOP_get_status_frames = 9;
inline constexpr std::uint32_t GNTTABOP_get_version = 10;
inline constexpr std::uint32_t GNTTABOP_swap_grant_ref = 11;
inline constexpr std::uint32_t GNTTABOP_cache_flush = 12;

// SPEC: grant_table.h GNTMAP_*
inline constexpr std::uint32_t GNTMAP_device_map = 1u << 0;
inline constexpr std::uint32_t GNTMAP_host_map = 1u << 1;
inline constexpr std::uint32_t GNTMAP_readonly = 1u << 2;
inline constexpr std::uint32_t GNTMAP_application_map = 1u << 3;
inline constexpr std::uint32_t GNTMAP_contains_pte = 1u << 4;

// SPEC: grant_table.h GNTST_* (int16 status of each batched element)
inline constexpr std::int16_t GNTST_okay = 0;
inline constexpr std::int16_t GNTST_general_error = -1;
inline constexpr std::int16_t GNTST_bad_domain = -2;
inline constexpr std::int16_t GNTST_bad_gntref = -3;
inline constexpr std::int16_t GNTST_bad_handle = -4;
inline constexpr std::int16_t GNTST_bad_virt_addr = -5;
inline constexpr std::int16_t GNTST_bad_dev_addr = -6;
inline constexpr std::int16_t GNTST_no_device_space = -7;
inline constexpr std::int16_t GNTST_permission_denied = -8;
inline constexpr std::int16_t GNTST_bad_page = -9;
inline constexpr std::int16_t GNTST_bad_copy_arg = -10;
inline constexpr std::int16_t GNTST_address_too_big = -11;
inline constexpr std::int16_t GNTST_eagain = -12;
inline constexpr std::int16_t GNTST_no_space = -13;

struct gnttab_map_grant_ref {
    std::uint64_t host_addr;  // in
    std::uint32_t flags;      // in: GNTMAP_*
    grant_ref_t ref;          // in
    domid_t dom;              // in: granting domain
    std::int16_t status;      // out: GNTST_*
    grant_handle_t handle;    // out
    std::uint64_t dev_bus_addr;  // out
};
static_assert(sizeof(gnttab_map_grant_ref) == 32);
static_assert(offsetof(gnttab_map_grant_ref, flags) == 8);
static_assert(offsetof(gnttab_map_grant_ref, ref) == 12);
static_assert(offsetof(gnttab_map_grant_ref, dom) == 16);
static_assert(offsetof(gnttab_map_grant_ref, status) == 18);
static_assert(offsetof(gnttab_map_grant_ref, handle) == 20);
static_assert(offsetof(gnttab_map_grant_ref, dev_bus_addr) == 24);

struct gnttab_unmap_grant_ref {
    std::uint64_t host_addr;     // in (0 = ignore)
    std::uint64_t dev_bus_addr;  // in (0 = ignore)
    grant_handle_t handle;       // in
    std::int16_t status;         // out
};
static_assert(sizeof(gnttab_unmap_grant_ref) == 24);
static_assert(offsetof(gnttab_unmap_grant_ref, dev_bus_addr) == 8);
static_assert(offsetof(gnttab_unmap_grant_ref, handle) == 16);
static_assert(offsetof(gnttab_unmap_grant_ref, status) == 20);

inline constexpr std::uint16_t GNTCOPY_source_gref = 1u << 0;
inline constexpr std::uint16_t GNTCOPY_dest_gref = 1u << 1;

struct gnttab_copy_ptr {
    union {
        grant_ref_t ref;
        xen_pfn_t gmfn;
    } u;
    domid_t domid;
    std::uint16_t offset;
};
static_assert(sizeof(gnttab_copy_ptr) == 16);

struct gnttab_copy {
    gnttab_copy_ptr source;
    gnttab_copy_ptr dest;
    std::uint16_t len;
    std::uint16_t flags;  // GNTCOPY_*
    std::int16_t status;  // out
};
static_assert(sizeof(gnttab_copy) == 40);
static_assert(offsetof(gnttab_copy, source) == 0);
static_assert(offsetof(gnttab_copy, source.domid) == 8);
static_assert(offsetof(gnttab_copy, source.offset) == 10);
static_assert(offsetof(gnttab_copy, dest) == 16);
static_assert(offsetof(gnttab_copy, dest.domid) == 24);
static_assert(offsetof(gnttab_copy, dest.offset) == 26);
static_assert(offsetof(gnttab_copy, len) == 32);
static_assert(offsetof(gnttab_copy, flags) == 34);
static_assert(offsetof(gnttab_copy, status) == 36);

struct gnttab_setup_table {
    domid_t dom;                 // in
    std::uint32_t nr_frames;     // in
    std::int16_t status;         // out
    std::uint64_t frame_list;    // XEN_GUEST_HANDLE(xen_pfn_t): unused here (frames come as an fd)
};
static_assert(sizeof(gnttab_setup_table) == 24);
static_assert(offsetof(gnttab_setup_table, nr_frames) == 4);
static_assert(offsetof(gnttab_setup_table, status) == 8);
static_assert(offsetof(gnttab_setup_table, frame_list) == 16);

struct gnttab_query_size {
    domid_t dom;                   // in
    std::uint32_t nr_frames;       // out
    std::uint32_t max_nr_frames;   // out
    std::int16_t status;           // out
};
static_assert(sizeof(gnttab_query_size) == 16);
static_assert(offsetof(gnttab_query_size, nr_frames) == 4);
static_assert(offsetof(gnttab_query_size, max_nr_frames) == 8);
static_assert(offsetof(gnttab_query_size, status) == 12);

}  // namespace hv::rings
