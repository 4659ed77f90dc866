// libFuzzer target for blkback's parse(): the first byte picks ABI and device limits, the rest
// is a ring slot, optionally followed by indirect pages. Every accepted request must respect
// the limits; every path must stay inside the buffers (ASan/UBSan).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "blkback/request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace hv::blk;
    if (size < 1) {
        return 0;
    }
    const std::uint8_t cfg = data[0];
    ++data;
    --size;
    const BlkifAbi abi = (cfg & 1) != 0 ? BlkifAbi::x86_32 : BlkifAbi::native;
    DeviceLimits dev;
    dev.sectors = (cfg & 2) != 0 ? (std::uint64_t{1} << 20) : ~std::uint64_t{0} / 1024;
    dev.sector_size = (cfg & 4) != 0 ? 4096 : 512;
    dev.read_only = (cfg & 8) != 0 ? ReadOnly::yes : ReadOnly::no;
    dev.discard = (cfg & 16) != 0;
    dev.discard_secure = (cfg & 32) != 0;
    dev.flush = dev.barrier = (cfg & 64) != 0;
    dev.max_indirect_segments = (cfg & 128) != 0 ? 4096 : 256;

    const std::size_t entry = blkif_entry_size(abi);
    auto slot = std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size);
    auto p = parse(slot, abi, dev);
    if (!p) {
        (void)to_blkif_status(p.error().error);
        return 0;
    }
    Request req = *p;
    std::vector<Segment> storage;  // outlives req's use of it
    if (req.indirect) {
        std::vector<std::byte> pages(req.nr_indirect_pages * 4096U);
        const std::size_t have = size > entry ? size - entry : 0;
        for (std::size_t i = 0; i < pages.size() && i < have; ++i) {
            pages[i] = static_cast<std::byte>(data[entry + i]);
        }
        storage.resize(req.nr_segments);
        if (!parse_indirect_segments(req, pages, storage, dev)) {
            return 0;
        }
    }
    if (req.kind != RequestKind::discard && req.segments().empty() && req.nr_sectors != 0) {
        std::abort();
    }
    if (req.nr_sectors != 0 && req.sector_number + req.nr_sectors > dev.sectors) {
        std::abort();
    }
    if ((req.sector_number | req.nr_sectors) & (dev.sector_size / 512 - 1)) {
        std::abort();
    }
    std::uint64_t sum = 0;
    for (const Segment& s : req.segments()) {
        if (s.last_sect > 7 || s.first_sect > s.last_sect) {
            std::abort();
        }
        sum += s.len_bytes() / 512;
    }
    if (req.kind != RequestKind::discard && sum != req.nr_sectors) {
        std::abort();
    }
    if (dev.read_only == ReadOnly::yes && req.kind != RequestKind::read) {
        std::abort();
    }
    return 0;
}
