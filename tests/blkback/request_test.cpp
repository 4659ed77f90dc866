// parse(): every accepted shape and every rejection branch, for both blkif ABIs.
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "blkback/request.hpp"

namespace hv::blk::test {
namespace {

using namespace hv::rings;

struct Native {
    using Rw = blkif_request;
    using Discard = blkif_request_discard;
    using Indirect = blkif_request_indirect;
    static constexpr BlkifAbi abi = BlkifAbi::native;
    static constexpr std::size_t id_offset = 8;
};
struct X86_32 {
    using Rw = blkif_x86_32_request;
    using Discard = blkif_x86_32_request_discard;
    using Indirect = blkif_x86_32_request_indirect;
    static constexpr BlkifAbi abi = BlkifAbi::x86_32;
    static constexpr std::size_t id_offset = 4;
};

DeviceLimits disk(std::uint64_t sectors = 1 << 20) {
    DeviceLimits d;
    d.sectors = sectors;
    d.discard = true;
    d.discard_secure = false;
    return d;
}

template <class Abi>
typename Abi::Rw rw(std::uint8_t op, std::uint64_t id, std::uint64_t sector,
                    std::initializer_list<blkif_request_segment> segs) {
    typename Abi::Rw r{};
    r.operation = op;
    r.nr_segments = static_cast<std::uint8_t>(segs.size());
    r.handle = 0x1234;
    r.id = id;
    r.sector_number = sector;
    std::size_t i = 0;
    for (const auto& s : segs) {
        r.seg[i++] = s;
    }
    return r;
}

/// Overlays a per-op layout on a zeroed slot of the ABI's entry size.
template <class Abi, class View>
typename Abi::Rw slot_from(const View& v) {
    typename Abi::Rw r{};
    std::memcpy(&r, &v, sizeof v);
    return r;
}

template <class Abi>
Rejection rejected(const typename Abi::Rw& slot, const DeviceLimits& dev) {
    auto p = parse(slot, dev);
    REQUIRE_FALSE(p.has_value());
    // The byte-span entry point sees the same thing.
    auto q = parse(std::as_bytes(std::span(&slot, 1)), Abi::abi, dev);
    REQUIRE_FALSE(q.has_value());
    CHECK(q.error().error == p.error().error);
    CHECK(q.error().id == p.error().id);
    return p.error();
}

#define ABIS Native, X86_32

TEMPLATE_TEST_CASE("a read with two segments is accepted with its sectors and grants",
                   "[blkback][request]", ABIS) {
    auto slot = rw<TestType>(BLKIF_OP_READ, 0xdeadbeefcafe, 64, {{7, 0, 7}, {9, 2, 5}});
    auto p = parse(slot, disk());
    REQUIRE(p.has_value());
    CHECK(p->id == 0xdeadbeefcafe);
    CHECK(p->operation == BLKIF_OP_READ);
    CHECK(p->kind == RequestKind::read);
    CHECK(p->handle == 0x1234);
    CHECK(p->sector_number == 64);
    CHECK(p->nr_sectors == 12);
    CHECK(p->offset_bytes() == 64 * 512);
    CHECK(p->len_bytes() == 12 * 512);
    REQUIRE(p->segments().size() == 2);
    CHECK(p->segments()[0].gref == GrantRef(7));
    CHECK(p->segments()[1].offset_bytes() == 1024);
    CHECK(p->segments()[1].len_bytes() == 2048);
    CHECK_FALSE(p->indirect);
}

TEMPLATE_TEST_CASE("the id is read from the ABI's own offset", "[blkback][request][abi]", ABIS) {
    std::array<std::byte, 112> raw{};
    raw[0] = std::byte{BLKIF_OP_READ};
    raw[1] = std::byte{1};
    const std::uint64_t id = 0x0102030405060708;
    std::memcpy(raw.data() + TestType::id_offset, &id, 8);
    const std::size_t seg_at = TestType::abi == BlkifAbi::native ? 24 : 20;
    raw[seg_at + 5] = std::byte{7};  // last_sect
    auto p = parse(std::span<const std::byte>(raw.data(), blkif_entry_size(TestType::abi)),
                   TestType::abi, disk());
    REQUIRE(p.has_value());
    CHECK(p->id == id);
    CHECK(p->nr_sectors == 8);
    CHECK(blkif_entry_size(TestType::abi) == (TestType::abi == BlkifAbi::native ? 112U : 108U));
}

TEMPLATE_TEST_CASE("a write covering the last sectors of the device is accepted",
                   "[blkback][request]", ABIS) {
    auto slot = rw<TestType>(BLKIF_OP_WRITE, 1, 1000 - 8, {{1, 0, 7}});
    auto p = parse(slot, disk(1000));
    REQUIRE(p.has_value());
    CHECK(p->kind == RequestKind::write);
}

TEMPLATE_TEST_CASE("flush and barrier may carry no segments", "[blkback][request]", ABIS) {
    auto f = parse(rw<TestType>(BLKIF_OP_FLUSH_DISKCACHE, 5, ~std::uint64_t{0}, {}), disk());
    REQUIRE(f.has_value());
    CHECK(f->kind == RequestKind::flush);
    CHECK(f->sector_number == 0);  // no range: the unused field is not passed on
    CHECK(f->nr_sectors == 0);
    CHECK(f->segments().empty());
    auto b = parse(rw<TestType>(BLKIF_OP_WRITE_BARRIER, 6, 0, {{3, 0, 7}}), disk());
    REQUIRE(b.has_value());
    CHECK(b->kind == RequestKind::barrier);
    CHECK(b->segments().size() == 1);
}

TEMPLATE_TEST_CASE("a discard is accepted with its range and secure flag", "[blkback][request]",
                   ABIS) {
    typename TestType::Discard d{};
    d.operation = BLKIF_OP_DISCARD;
    d.flag = BLKIF_DISCARD_SECURE;
    d.id = 77;
    d.sector_number = 128;
    d.nr_sectors = 4096;
    auto dev = disk();
    dev.discard_secure = true;
    auto p = parse(slot_from<TestType>(d), dev);
    REQUIRE(p.has_value());
    CHECK(p->kind == RequestKind::discard);
    CHECK(p->id == 77);
    CHECK(p->secure);
    CHECK(p->sector_number == 128);
    CHECK(p->nr_sectors == 4096);
    CHECK(p->segments().empty());
}

template <class Abi>
typename Abi::Rw indirect(std::uint8_t op, std::uint16_t nseg, std::uint64_t sector = 0) {
    typename Abi::Indirect ind{};
    ind.operation = BLKIF_OP_INDIRECT;
    ind.indirect_op = op;
    ind.nr_segments = nseg;
    ind.id = 4242;
    ind.sector_number = sector;
    ind.handle = 3;
    for (unsigned i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; ++i) {
        ind.indirect_grefs[i] = 100 + i;
    }
    return slot_from<Abi>(ind);
}

std::vector<std::byte> indirect_pages(unsigned pages, unsigned nseg, std::uint8_t first = 0,
                                      std::uint8_t last = 7) {
    std::vector<std::byte> v(pages * XEN_PAGE_SIZE);
    for (unsigned i = 0; i < nseg; ++i) {
        blkif_request_segment s{1000 + i, first, last};
        std::memcpy(v.data() + i * sizeof s, &s, sizeof s);
    }
    return v;
}

TEMPLATE_TEST_CASE("an indirect write is parsed in two stages", "[blkback][request]", ABIS) {
    auto dev = disk();
    dev.max_indirect_segments = 1024;
    auto p = parse(indirect<TestType>(BLKIF_OP_WRITE, 600, 8), dev);
    REQUIRE(p.has_value());
    CHECK(p->indirect);
    CHECK(p->id == 4242);
    CHECK(p->operation == BLKIF_OP_WRITE);  // the response carries indirect_op
    CHECK(p->kind == RequestKind::write);
    CHECK(p->handle == 3);
    CHECK(p->nr_indirect_pages == 2);
    CHECK(p->indirect_grefs[0] == GrantRef(100));
    CHECK(p->indirect_grefs[1] == GrantRef(101));
    CHECK(p->segments().empty());  // not yet
    auto pages = indirect_pages(2, 600);
    std::vector<Segment> storage(600);
    REQUIRE(parse_indirect_segments(*p, pages, storage, dev).has_value());
    REQUIRE(p->segments().size() == 600);
    CHECK(p->segments()[599].gref == GrantRef(1599));
    CHECK(p->segments()[512].gref == GrantRef(1512));  // first segment of the second page
    CHECK(p->nr_sectors == 600 * 8);
}

// ---- rejections: one test per branch ------------------------------------------------------

TEMPLATE_TEST_CASE("unknown and reserved operations get EOPNOTSUPP with the id echoed",
                   "[blkback][request][hostile]", ABIS) {
    for (std::uint8_t op : {std::uint8_t{BLKIF_OP_RESERVED_1}, std::uint8_t{7}, std::uint8_t{200},
                            std::uint8_t{255}}) {
        auto r = rejected<TestType>(rw<TestType>(op, 99, 0, {{1, 0, 7}}), disk());
        CHECK(r.id == 99);
        CHECK(r.operation == op);
        CHECK(r.error == Errc::unsupported_op);
        CHECK(to_blkif_status(r.error) == BLKIF_RSP_EOPNOTSUPP);
    }
}

TEMPLATE_TEST_CASE("reads and writes without segments are refused", "[blkback][request][hostile]",
                   ABIS) {
    for (std::uint8_t op : {BLKIF_OP_READ, BLKIF_OP_WRITE}) {
        auto r = rejected<TestType>(rw<TestType>(op, 1, 0, {}), disk());
        CHECK(r.error == Errc::bad_segment_count);
        CHECK(r.operation == op);
        CHECK(to_blkif_status(r.error) == BLKIF_RSP_ERROR);
    }
}

TEMPLATE_TEST_CASE("more than 11 direct segments are refused", "[blkback][request][hostile]",
                   ABIS) {
    auto slot = rw<TestType>(BLKIF_OP_READ, 1, 0, {{1, 0, 7}});
    for (unsigned n : {12U, 100U, 255U}) {
        slot.nr_segments = static_cast<std::uint8_t>(n);
        CHECK(rejected<TestType>(slot, disk()).error == Errc::bad_segment_count);
    }
    auto flush = rw<TestType>(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, {});
    flush.nr_segments = 12;
    CHECK(rejected<TestType>(flush, disk()).error == Errc::bad_segment_count);
}

TEMPLATE_TEST_CASE("a segment with first_sect after last_sect is refused",
                   "[blkback][request][hostile]", ABIS) {
    auto r = rejected<TestType>(rw<TestType>(BLKIF_OP_READ, 1, 0, {{1, 0, 7}, {2, 5, 4}}),
                                disk());
    CHECK(r.error == Errc::bad_segment);
}

TEMPLATE_TEST_CASE("a segment with last_sect beyond the page is refused",
                   "[blkback][request][hostile]", ABIS) {
    CHECK(rejected<TestType>(rw<TestType>(BLKIF_OP_WRITE, 1, 0, {{1, 0, 8}}), disk()).error ==
          Errc::bad_segment);
    CHECK(rejected<TestType>(rw<TestType>(BLKIF_OP_WRITE, 1, 0, {{1, 9, 255}}), disk()).error ==
          Errc::bad_segment);
}

TEMPLATE_TEST_CASE("sectors past the end of the device are refused", "[blkback][request][hostile]",
                   ABIS) {
    auto r = rejected<TestType>(rw<TestType>(BLKIF_OP_READ, 1, 1000 - 7, {{1, 0, 7}}),
                                disk(1000));
    CHECK(r.error == Errc::out_of_range);
    CHECK(rejected<TestType>(rw<TestType>(BLKIF_OP_READ, 1, 5000, {{1, 0, 0}}), disk(1000))
              .error == Errc::out_of_range);
}

TEMPLATE_TEST_CASE("sector arithmetic that overflows is refused", "[blkback][request][hostile]",
                   ABIS) {
    auto r = rejected<TestType>(
        rw<TestType>(BLKIF_OP_READ, 1, ~std::uint64_t{0} - 3, {{1, 0, 7}}),
        disk(~std::uint64_t{0}));
    CHECK(r.error == Errc::out_of_range);
    typename TestType::Discard d{};
    d.operation = BLKIF_OP_DISCARD;
    d.sector_number = 8;
    d.nr_sectors = ~std::uint64_t{0} - 7;
    CHECK(rejected<TestType>(slot_from<TestType>(d), disk(~std::uint64_t{0})).error ==
          Errc::out_of_range);
}

TEMPLATE_TEST_CASE("requests not aligned to a 4096-byte logical block are refused",
                   "[blkback][request][hostile]", ABIS) {
    auto dev = disk();
    dev.sector_size = 4096;
    CHECK(parse(rw<TestType>(BLKIF_OP_READ, 1, 8, {{1, 0, 7}}), dev).has_value());
    CHECK(rejected<TestType>(rw<TestType>(BLKIF_OP_READ, 1, 4, {{1, 0, 7}}), dev).error ==
          Errc::misaligned);
    CHECK(rejected<TestType>(rw<TestType>(BLKIF_OP_READ, 1, 8, {{1, 0, 3}}), dev).error ==
          Errc::bad_segment);
    typename TestType::Discard d{};
    d.operation = BLKIF_OP_DISCARD;
    d.sector_number = 8;
    d.nr_sectors = 12;
    CHECK(rejected<TestType>(slot_from<TestType>(d), dev).error == Errc::misaligned);
    auto ind = parse(indirect<TestType>(BLKIF_OP_READ, 1, 3), dev);
    REQUIRE_FALSE(ind.has_value());
    CHECK(ind.error().error == Errc::misaligned);
}

TEMPLATE_TEST_CASE("a read-only vbd refuses writes, barriers, flushes and discards as Linux does",
                   "[blkback][request][hostile]", ABIS) {
    auto dev = disk();
    dev.read_only = ReadOnly::yes;
    CHECK(parse(rw<TestType>(BLKIF_OP_READ, 1, 0, {{1, 0, 7}}), dev).has_value());
    for (std::uint8_t op : {BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE}) {
        auto r = rejected<TestType>(rw<TestType>(op, 8, 0, {{1, 0, 7}}), dev);
        CHECK(r.error == Errc::read_only);
        CHECK(r.id == 8);
        CHECK(to_blkif_status(r.error) == BLKIF_RSP_ERROR);
    }
    typename TestType::Discard d{};
    d.operation = BLKIF_OP_DISCARD;
    d.nr_sectors = 8;
    CHECK(rejected<TestType>(slot_from<TestType>(d), dev).error == Errc::read_only);
    auto ind = parse(indirect<TestType>(BLKIF_OP_WRITE, 1), dev);
    REQUIRE_FALSE(ind.has_value());
    CHECK(ind.error().error == Errc::read_only);
    CHECK(parse(indirect<TestType>(BLKIF_OP_READ, 1), dev).has_value());
}

TEMPLATE_TEST_CASE("operations the vbd does not offer get EOPNOTSUPP",
                   "[blkback][request][hostile]", ABIS) {
    auto dev = disk();
    dev.flush = false;
    dev.barrier = false;
    dev.discard = false;
    dev.max_indirect_segments = 0;
    auto eop = [&](const typename TestType::Rw& slot) {
        auto r = rejected<TestType>(slot, dev);
        CHECK(r.error == Errc::unsupported_op);
        CHECK(to_blkif_status(r.error) == BLKIF_RSP_EOPNOTSUPP);
    };
    eop(rw<TestType>(BLKIF_OP_FLUSH_DISKCACHE, 1, 0, {}));
    eop(rw<TestType>(BLKIF_OP_WRITE_BARRIER, 1, 0, {}));
    typename TestType::Discard d{};
    d.operation = BLKIF_OP_DISCARD;
    d.nr_sectors = 8;
    eop(slot_from<TestType>(d));
    eop(indirect<TestType>(BLKIF_OP_READ, 1));
}

TEMPLATE_TEST_CASE("a secure discard is refused unless discard-secure is offered",
                   "[blkback][request][hostile]", ABIS) {
    typename TestType::Discard d{};
    d.operation = BLKIF_OP_DISCARD;
    d.flag = BLKIF_DISCARD_SECURE;
    d.id = 31;
    d.nr_sectors = 8;
    auto r = rejected<TestType>(slot_from<TestType>(d), disk());
    CHECK(r.error == Errc::unsupported_op);
    CHECK(r.id == 31);
    CHECK(r.operation == BLKIF_OP_DISCARD);
}

TEMPLATE_TEST_CASE("indirect_op other than READ or WRITE is refused and echoed",
                   "[blkback][request][hostile]", ABIS) {
    for (std::uint8_t op : {BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT,
                            std::uint8_t{99}}) {
        auto r = rejected<TestType>(indirect<TestType>(op, 1), disk());
        CHECK(r.error == Errc::bad_indirect);
        CHECK(r.operation == op);
        CHECK(r.id == 4242);
        CHECK(to_blkif_status(r.error) == BLKIF_RSP_ERROR);
    }
}

TEMPLATE_TEST_CASE("an indirect segment count of 0 or above the advertised limit is refused",
                   "[blkback][request][hostile]", ABIS) {
    auto dev = disk();
    dev.max_indirect_segments = 256;
    CHECK(rejected<TestType>(indirect<TestType>(BLKIF_OP_READ, 0), dev).error ==
          Errc::bad_segment_count);
    CHECK(rejected<TestType>(indirect<TestType>(BLKIF_OP_READ, 257), dev).error ==
          Errc::bad_segment_count);
    CHECK(rejected<TestType>(indirect<TestType>(BLKIF_OP_READ, 0xffff), dev).error ==
          Errc::bad_segment_count);
    CHECK(parse(indirect<TestType>(BLKIF_OP_READ, 256), dev).has_value());
}

TEMPLATE_TEST_CASE("an indirect request starting past the end is refused at once",
                   "[blkback][request][hostile]", ABIS) {
    CHECK(rejected<TestType>(indirect<TestType>(BLKIF_OP_READ, 1, 1000), disk(1000)).error ==
          Errc::out_of_range);
}

TEMPLATE_TEST_CASE("bad segments inside an indirect page are refused",
                   "[blkback][request][hostile]", ABIS) {
    auto dev = disk(4096);
    auto run = [&](std::uint16_t nseg, std::uint64_t sector, std::vector<std::byte> pages) {
        auto p = parse(indirect<TestType>(BLKIF_OP_READ, nseg, sector), dev);
        REQUIRE(p.has_value());
        std::vector<Segment> storage(nseg);
        auto r = parse_indirect_segments(*p, pages, storage, dev);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().id == 4242);
        CHECK(r.error().operation == BLKIF_OP_READ);
        CHECK(p->segments().empty());  // nothing half-parsed is exposed
        return r.error().error;
    };
    CHECK(run(10, 0, indirect_pages(1, 10, 4, 3)) == Errc::bad_segment);
    CHECK(run(10, 0, indirect_pages(1, 10, 0, 8)) == Errc::bad_segment);
    // The last segment of 200 is bad.
    auto pages = indirect_pages(1, 200);
    pages[199 * 8 + 5] = std::byte{11};
    CHECK(run(200, 0, pages) == Errc::bad_segment);
    // 100 full pages from sector 4096 - 8*50: past the end only once summed up.
    CHECK(run(100, 4096 - 400, indirect_pages(1, 100)) == Errc::out_of_range);
}

TEMPLATE_TEST_CASE("parse_indirect_segments refuses a page copy or storage that is too small",
                   "[blkback][request][hostile]", ABIS) {
    auto dev = disk();
    dev.max_indirect_segments = 1024;
    auto p = parse(indirect<TestType>(BLKIF_OP_WRITE, 513), dev);
    REQUIRE(p.has_value());
    CHECK(p->nr_indirect_pages == 2);
    std::vector<Segment> storage(513);
    auto one_page = indirect_pages(1, 512);
    CHECK(parse_indirect_segments(*p, one_page, storage, dev).error().error ==
          Errc::invalid_argument);
    std::vector<Segment> small(512);
    auto two = indirect_pages(2, 513);
    CHECK(parse_indirect_segments(*p, two, small, dev).error().error == Errc::invalid_argument);
    Request direct = *parse(rw<TestType>(BLKIF_OP_READ, 1, 0, {{1, 0, 7}}), dev);
    CHECK(parse_indirect_segments(direct, two, storage, dev).error().error ==
          Errc::invalid_argument);
    CHECK(parse_indirect_segments(*p, two, storage, dev).has_value());
}

TEMPLATE_TEST_CASE("a slot shorter than the ABI's entry is refused", "[blkback][request][hostile]",
                   ABIS) {
    std::vector<std::byte> raw(blkif_entry_size(TestType::abi) - 1);
    auto p = parse(std::span<const std::byte>(raw), TestType::abi, disk());
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().error == Errc::invalid_argument);
}

TEST_CASE("malformed device limits are refused rather than trusted", "[blkback][request]") {
    auto dev = disk();
    dev.sector_size = 1024;
    auto p = parse(rw<Native>(BLKIF_OP_READ, 1, 0, {{1, 0, 7}}), dev);
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().error == Errc::invalid_argument);
}

TEST_CASE("errors map to wire status in one place", "[blkback][request]") {
    CHECK(to_blkif_status(std::error_code()) == BLKIF_RSP_OKAY);
    CHECK(to_blkif_status(make_error_code(Errc::unsupported_op)) == BLKIF_RSP_EOPNOTSUPP);
    CHECK(to_blkif_status(std::make_error_code(std::errc::operation_not_supported)) ==
          BLKIF_RSP_EOPNOTSUPP);
    CHECK(to_blkif_status(std::error_code(EOPNOTSUPP, std::system_category())) ==
          BLKIF_RSP_EOPNOTSUPP);
    for (Errc e : {Errc::out_of_range, Errc::misaligned, Errc::read_only, Errc::bad_segment,
                   Errc::bad_segment_count, Errc::bad_indirect, Errc::busy}) {
        CHECK(to_blkif_status(make_error_code(e)) == BLKIF_RSP_ERROR);
    }
    CHECK(to_blkif_status(std::error_code(EIO, std::system_category())) == BLKIF_RSP_ERROR);
    CHECK(to_blkif_status(std::int32_t{4096}) == BLKIF_RSP_OKAY);
    CHECK(to_blkif_status(std::int32_t{0}) == BLKIF_RSP_OKAY);
    CHECK(to_blkif_status(std::int32_t{-EIO}) == BLKIF_RSP_ERROR);
    CHECK(to_blkif_status(std::int32_t{-EOPNOTSUPP}) == BLKIF_RSP_EOPNOTSUPP);
}

TEST_CASE("random slots never crash parse and accepted ones respect the limits",
          "[blkback][request][hostile]") {
    const std::uint32_t seed = 0xb10cb10c;
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    auto dev = disk(1 << 16);
    std::array<std::byte, 112> raw{};
    for (int i = 0; i < 20000; ++i) {
        for (auto& b : raw) {
            b = static_cast<std::byte>(rng());
        }
        raw[0] = static_cast<std::byte>(rng() % 8);  // mostly known operations
        const auto abi = (i & 1) != 0 ? BlkifAbi::native : BlkifAbi::x86_32;
        auto p = parse(std::span<const std::byte>(raw.data(), blkif_entry_size(abi)), abi, dev);
        if (p.has_value() && !p->indirect) {
            REQUIRE(p->sector_number + p->nr_sectors <= dev.sectors);
            for (const auto& s : p->segments()) {
                REQUIRE(s.first_sect <= s.last_sect);
                REQUIRE(s.last_sect < 8);
            }
        }
    }
}

}  // namespace
}  // namespace hv::blk::test
