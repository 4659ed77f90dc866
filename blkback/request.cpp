// blkif request validation (xen-abi.md §5.3, as Linux xen-blkback enforces it) and the
// error → BLKIF_RSP_* mapping. Layer: L2 data path. Pure functions on private copies.
#include "blkback/request.hpp"

#include <cstring>

namespace hv::blk {

using namespace hv::rings;

struct RequestAccess {
    static std::array<Segment, BLKIF_MAX_SEGMENTS_PER_REQUEST>& direct(Request& r) noexcept {
        return r.direct_;
    }
    static void use_external(Request& r, const Segment* s) noexcept {
        r.external_ = s;
        r.segments_ready_ = true;
    }
    static void ready(Request& r) noexcept { r.segments_ready_ = true; }
};

namespace {

hv::unexpected<Rejection> reject(std::uint64_t id, std::uint8_t op, Errc e) noexcept {
    return hv::unexpected(Rejection{id, op, make_error_code(e)});
}

/// Sectors per logical block, minus one: a mask for alignment checks.
std::uint64_t block_mask(const DeviceLimits& dev) noexcept {
    return dev.sector_size / 512U - 1U;
}

/// One segment of the wire, checked: last_sect < 8, first ≤ last, nsec aligned.
bool check_segment(const blkif_request_segment& s, const DeviceLimits& dev,
                   std::uint64_t& total) noexcept {
    if (s.last_sect >= BLKIF_SECTORS_PER_PAGE || s.first_sect > s.last_sect) {
        return false;
    }
    const std::uint64_t nsec = s.last_sect - s.first_sect + 1U;
    if ((nsec & block_mask(dev)) != 0) {
        return false;
    }
    total += nsec;
    return true;
}

/// sector_number + nr_sectors inside the device, without overflow; alignment.
Errc check_range(std::uint64_t sector, std::uint64_t nr, const DeviceLimits& dev) noexcept {
    if ((sector & block_mask(dev)) != 0 || (nr & block_mask(dev)) != 0) {
        return Errc::misaligned;
    }
    std::uint64_t end = 0;
    if (__builtin_add_overflow(sector, nr, &end) || end > dev.sectors) {
        return Errc::out_of_range;
    }
    return Errc{};
}

bool valid_limits(const DeviceLimits& dev) noexcept {
    return (dev.sector_size == 512 || dev.sector_size == 4096) &&
           dev.max_indirect_segments <= BLKIF_SEGS_PER_INDIRECT_FRAME *
                                            BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;
}

template <class Rw, class Discard, class Indirect>
hv::expected<Request, Rejection> parse_slot(const Rw& slot, const DeviceLimits& dev) noexcept {
    Request req;
    req.id = slot.id;
    req.operation = slot.operation;
    req.handle = slot.handle;
    if (!valid_limits(dev)) {
        return reject(req.id, req.operation, Errc::invalid_argument);  // our bug, not the guest's
    }
    const bool ro = dev.read_only == ReadOnly::yes;
    switch (slot.operation) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE: {
        const std::uint8_t op = slot.operation;
        req.kind = op == BLKIF_OP_READ            ? RequestKind::read
                   : op == BLKIF_OP_WRITE         ? RequestKind::write
                   : op == BLKIF_OP_WRITE_BARRIER ? RequestKind::barrier
                                                  : RequestKind::flush;
        if (req.kind == RequestKind::flush && !dev.flush) {
            return reject(req.id, op, Errc::unsupported_op);
        }
        if (req.kind == RequestKind::barrier && !dev.barrier) {
            return reject(req.id, op, Errc::unsupported_op);
        }
        // SPEC: Linux blkback fails writes of every kind on a read-only vbd (REQ_OP_WRITE).
        if (ro && req.kind != RequestKind::read) {
            return reject(req.id, op, Errc::read_only);
        }
        const bool data_needed = req.kind == RequestKind::read || req.kind == RequestKind::write;
        if ((slot.nr_segments == 0 && data_needed) ||
            slot.nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
            return reject(req.id, op, Errc::bad_segment_count);
        }
        req.sector_number = slot.sector_number;
        req.nr_segments = slot.nr_segments;
        auto& segs = RequestAccess::direct(req);
        std::uint64_t total = 0;
        for (unsigned i = 0; i < slot.nr_segments; ++i) {
            const blkif_request_segment s = slot.seg[i];
            if (!check_segment(s, dev, total)) {
                return reject(req.id, op, Errc::bad_segment);
            }
            segs[i] = Segment{GrantRef(s.gref), s.first_sect, s.last_sect};
        }
        req.nr_sectors = total;
        if (slot.nr_segments != 0) {
            if (const Errc e = check_range(req.sector_number, total, dev); e != Errc{}) {
                return reject(req.id, op, e);
            }
        } else {
            req.sector_number = 0;  // a pure flush has no range; nothing downstream sees junk
        }
        RequestAccess::ready(req);
        return req;
    }
    case BLKIF_OP_DISCARD: {
        const auto d = blkif_view_as<Discard>(slot);
        req.kind = RequestKind::discard;
        if (!dev.discard) {
            return reject(req.id, d.operation, Errc::unsupported_op);
        }
        if ((d.flag & BLKIF_DISCARD_SECURE) != 0 && !dev.discard_secure) {
            return reject(req.id, d.operation, Errc::unsupported_op);
        }
        if (ro) {
            return reject(req.id, d.operation, Errc::read_only);
        }
        req.secure = (d.flag & BLKIF_DISCARD_SECURE) != 0;
        req.sector_number = d.sector_number;
        req.nr_sectors = d.nr_sectors;
        if (const Errc e = check_range(d.sector_number, d.nr_sectors, dev); e != Errc{}) {
            return reject(req.id, d.operation, e);
        }
        RequestAccess::ready(req);
        return req;
    }
    case BLKIF_OP_INDIRECT: {
        const auto ind = blkif_view_as<Indirect>(slot);
        // SPEC: the response carries indirect_op, even when indirect_op itself is bogus.
        req.operation = ind.indirect_op;
        req.handle = ind.handle;
        if (dev.max_indirect_segments == 0) {
            return reject(req.id, ind.indirect_op, Errc::unsupported_op);
        }
        if (ind.indirect_op != BLKIF_OP_READ && ind.indirect_op != BLKIF_OP_WRITE) {
            return reject(req.id, ind.indirect_op, Errc::bad_indirect);
        }
        req.kind = ind.indirect_op == BLKIF_OP_READ ? RequestKind::read : RequestKind::write;
        if (ro && req.kind == RequestKind::write) {
            return reject(req.id, ind.indirect_op, Errc::read_only);
        }
        if (ind.nr_segments == 0 || ind.nr_segments > dev.max_indirect_segments) {
            return reject(req.id, ind.indirect_op, Errc::bad_segment_count);
        }
        req.indirect = true;
        req.sector_number = ind.sector_number;
        req.nr_segments = ind.nr_segments;
        req.nr_indirect_pages = static_cast<std::uint8_t>(
            (ind.nr_segments + BLKIF_SEGS_PER_INDIRECT_FRAME - 1) / BLKIF_SEGS_PER_INDIRECT_FRAME);
        for (unsigned i = 0; i < req.nr_indirect_pages; ++i) {
            req.indirect_grefs[i] = GrantRef(ind.indirect_grefs[i]);
        }
        if ((req.sector_number & block_mask(dev)) != 0) {
            return reject(req.id, ind.indirect_op, Errc::misaligned);
        }
        if (req.sector_number >= dev.sectors) {  // the rest once the segments are known
            return reject(req.id, ind.indirect_op, Errc::out_of_range);
        }
        return req;
    }
    default:
        // SPEC: unknown operations (and RESERVED_1) get EOPNOTSUPP with the id echoed.
        return reject(req.id, slot.operation, Errc::unsupported_op);
    }
}

}  // namespace

hv::expected<Request, Rejection> parse(const blkif_request& slot,
                                       const DeviceLimits& dev) noexcept {
    return parse_slot<blkif_request, blkif_request_discard, blkif_request_indirect>(slot, dev);
}

hv::expected<Request, Rejection> parse(const blkif_x86_32_request& slot,
                                       const DeviceLimits& dev) noexcept {
    return parse_slot<blkif_x86_32_request, blkif_x86_32_request_discard,
                      blkif_x86_32_request_indirect>(slot, dev);
}

hv::expected<Request, Rejection> parse(std::span<const std::byte> slot, BlkifAbi abi,
                                       const DeviceLimits& dev) noexcept {
    if (slot.size() < blkif_entry_size(abi)) {
        return reject(0, 0, Errc::invalid_argument);
    }
    if (abi == BlkifAbi::native) {
        blkif_request copy;
        std::memcpy(&copy, slot.data(), sizeof copy);
        return parse(copy, dev);
    }
    blkif_x86_32_request copy;
    std::memcpy(&copy, slot.data(), sizeof copy);
    return parse(copy, dev);
}

hv::expected<void, Rejection> parse_indirect_segments(Request& req,
                                                      std::span<const std::byte> pages,
                                                      std::span<Segment> storage,
                                                      const DeviceLimits& dev) noexcept {
    if (!req.indirect || req.nr_segments == 0 || storage.size() < req.nr_segments ||
        pages.size() < static_cast<std::size_t>(req.nr_indirect_pages) * XEN_PAGE_SIZE ||
        static_cast<std::size_t>(req.nr_segments) >
            static_cast<std::size_t>(req.nr_indirect_pages) * BLKIF_SEGS_PER_INDIRECT_FRAME) {
        return reject(req.id, req.operation, Errc::invalid_argument);  // caller's contract
    }
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < req.nr_segments; ++i) {
        blkif_request_segment s;
        // Segments are packed 512 per page; the copy is contiguous, so index it linearly.
        std::memcpy(&s, pages.data() + i * sizeof s, sizeof s);
        if (!check_segment(s, dev, total)) {
            return reject(req.id, req.operation, Errc::bad_segment);
        }
        storage[i] = Segment{GrantRef(s.gref), s.first_sect, s.last_sect};
    }
    if (const Errc e = check_range(req.sector_number, total, dev); e != Errc{}) {
        return reject(req.id, req.operation, e);
    }
    req.nr_sectors = total;
    RequestAccess::use_external(req, storage.data());
    return {};
}

std::int16_t to_blkif_status(std::error_code ec) noexcept {
    if (!ec) {
        return BLKIF_RSP_OKAY;
    }
    if (ec == Errc::unsupported_op || ec == std::errc::operation_not_supported) {
        return BLKIF_RSP_EOPNOTSUPP;
    }
    return BLKIF_RSP_ERROR;  // guest faults and host I/O errors look the same to the guest
}

std::int16_t to_blkif_status(std::int32_t completion_result) noexcept {
    if (completion_result >= 0) {
        return BLKIF_RSP_OKAY;
    }
    return to_blkif_status(std::error_code(-completion_result, std::system_category()));
}

}  // namespace hv::blk
