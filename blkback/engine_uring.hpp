// Private to the engines (not for L2): the io_uring engine's device layout. A plain file or
// block device is one linear segment on one device; an LVM volume served without
// device-mapper is its linear and striped segments over its PVs. Layer: L3.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blkback/engine.hpp"

namespace hv::blk::detail {

/// Where stripe i of a segment starts on its device.
struct UringArea {
    std::uint32_t device = 0;       ///< index into UringLayout::devices
    std::uint64_t base_bytes = 0;   ///< device offset of the area's first byte
};

/// Logical [start_bytes, start_bytes + size_bytes). Linear: one area and chunk_bytes 0.
/// Striped (dm-stripe): chunk c of the segment lives on area c % n at row c / n; size_bytes is
/// a multiple of chunk_bytes * n.
struct UringSegment {
    std::uint64_t start_bytes = 0;
    std::uint64_t size_bytes = 0;
    std::uint64_t chunk_bytes = 0;
    std::vector<UringArea> areas;
};

struct UringLayout {
    std::vector<std::string> devices;   ///< paths, opened O_DIRECT
    std::vector<UringSegment> segments; ///< sorted, contiguous from 0
    std::uint64_t capacity_bytes = 0;   ///< sum of segment sizes
};

/// A contiguous device run backing logical bytes [offset, offset + len_bytes).
struct UringExtent {
    std::uint32_t device;
    std::uint64_t device_offset;
    std::uint64_t len_bytes;  ///< until the next chunk or segment boundary
};

/// Errc::invalid_argument if segments overlap, leave gaps, or stripe geometry is inconsistent.
hv::Result<void> check_layout(const UringLayout& layout) noexcept;
/// Maps one logical byte offset (< capacity) of a checked layout.
UringExtent map_layout(const UringLayout& layout, std::uint64_t offset_bytes) noexcept;

hv::Result<std::unique_ptr<BlockEngine>> make_uring_layout_engine(
    UringLayout layout, const UringEngineOptions& opt) noexcept;

}  // namespace hv::blk::detail
