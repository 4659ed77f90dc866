// Xen basic ABI constants (xen/include/public/xen.h): domid_t and the reserved domain ids.
// Layer: rings (L0). Header-only, no syscalls.
#pragma once

#include <cstdint>

namespace hv::rings {

using domid_t = std::uint16_t;

// SPEC: xen.h DOMID_*; ids >= DOMID_FIRST_RESERVED never name a real domain.
inline constexpr domid_t DOMID_FIRST_RESERVED = 0x7FF0;
inline constexpr domid_t DOMID_SELF = 0x7FF0;
inline constexpr domid_t DOMID_IO = 0x7FF1;
inline constexpr domid_t DOMID_XEN = 0x7FF2;
inline constexpr domid_t DOMID_COW = 0x7FF3;
inline constexpr domid_t DOMID_INVALID = 0x7FF4;
inline constexpr domid_t DOMID_ANY = 0x7FF5;
inline constexpr domid_t DOMID_IDLE = 0x7FFF;

/// Xen pages are 4096 bytes whatever the host page size (XEN_PAGE_SHIFT 12).
inline constexpr std::uint32_t XEN_PAGE_SHIFT = 12;
inline constexpr std::uint32_t XEN_PAGE_SIZE = 1u << XEN_PAGE_SHIFT;

using xen_pfn_t = std::uint64_t;

}  // namespace hv::rings
