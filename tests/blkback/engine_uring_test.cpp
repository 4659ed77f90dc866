// io_uring engine specifics: the segment/stripe layout (the part that serves LVM volumes
// without device-mapper), checked over plain files standing in for PVs.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <random>

#include "blkback/engine_uring.hpp"
#include "engine_test_util.hpp"
#include "temp_dir.hpp"

namespace hv::blk::test {
namespace {

using detail::UringArea;
using detail::UringLayout;
using detail::UringSegment;

/// Reference mapping, written independently of map_layout: walk the segment chunk by chunk.
std::pair<std::uint32_t, std::uint64_t> reference_map(const UringLayout& l, std::uint64_t off) {
    for (const UringSegment& s : l.segments) {
        if (off < s.start_bytes || off >= s.start_bytes + s.size_bytes) {
            continue;
        }
        std::uint64_t rel = off - s.start_bytes;
        if (s.chunk_bytes == 0) {
            return {s.areas[0].device, s.areas[0].base_bytes + rel};
        }
        std::vector<std::uint64_t> fill(s.areas.size(), 0);  // bytes placed on each area
        std::size_t area = 0;
        while (rel >= s.chunk_bytes) {
            fill[area] += s.chunk_bytes;
            rel -= s.chunk_bytes;
            area = (area + 1) % s.areas.size();
        }
        return {s.areas[area].device, s.areas[area].base_bytes + fill[area] + rel};
    }
    FAIL("offset outside layout");
    return {};
}

void make_file(const std::string& path, std::uint64_t size) {
    const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
    ::close(fd);
}

std::vector<std::byte> read_file(const std::string& path) {
    std::vector<std::byte> out;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    const off_t size = ::lseek(fd, 0, SEEK_END);
    out.resize(static_cast<std::size_t>(size));
    REQUIRE(::pread(fd, out.data(), out.size(), 0) == size);
    ::close(fd);
    return out;
}

/// Two 4 MiB "PVs": a linear segment on dev0, a 2-way striped one (64 KiB chunks), then a
/// linear one on dev1 — like an LV extended across PVs.
UringLayout sample_layout(const hv::test::TempDir& dir) {
    UringLayout l;
    l.devices = {(dir / "pv0").string(), (dir / "pv1").string()};
    for (const auto& d : l.devices) {
        make_file(d, 4 << 20);
    }
    l.segments.push_back(UringSegment{0, 1 << 20, 0, {UringArea{0, 1 << 20}}});
    l.segments.push_back(
        UringSegment{1 << 20, 1 << 20, 64 << 10, {UringArea{0, 2 << 20}, UringArea{1, 1 << 20}}});
    l.segments.push_back(UringSegment{2 << 20, 512 << 10, 0, {UringArea{1, 3 << 20}}});
    l.capacity_bytes = (2 << 20) + (512 << 10);
    return l;
}

TEST_CASE("map_layout agrees with a chunk-walking reference on random offsets",
          "[blkback][uring]") {
    UringLayout l;
    l.devices = {"a", "b", "c"};
    l.segments.push_back(UringSegment{0, 3 << 20, 4096,
                                      {UringArea{0, 0}, UringArea{1, 8192}, UringArea{2, 512}}});
    l.segments.push_back(UringSegment{3 << 20, 1 << 20, 0, {UringArea{1, 1 << 30}}});
    l.segments.push_back(UringSegment{4 << 20, 256 << 10, 128 << 10, {UringArea{2, 0}, UringArea{0, 1 << 20}}});
    l.capacity_bytes = (4 << 20) + (256 << 10);
    REQUIRE(detail::check_layout(l).has_value());
    const std::uint32_t seed = 20261202;
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 2000; ++i) {
        const std::uint64_t off = rng() % l.capacity_bytes;
        const auto x = detail::map_layout(l, off);
        const auto ref = reference_map(l, off);
        REQUIRE(x.device == ref.first);
        REQUIRE(x.device_offset == ref.second);
        REQUIRE(x.len_bytes > 0);
        // The whole run maps contiguously.
        const auto last = reference_map(l, off + x.len_bytes - 1);
        REQUIRE(last.first == x.device);
        REQUIRE(last.second == x.device_offset + x.len_bytes - 1);
    }
}

TEST_CASE("check_layout refuses gaps, overlaps, bad devices and stripe geometry",
          "[blkback][uring][hostile]") {
    auto base = [] {
        UringLayout l;
        l.devices = {"a", "b"};
        l.segments.push_back(UringSegment{0, 1 << 20, 0, {UringArea{0, 0}}});
        l.segments.push_back(
            UringSegment{1 << 20, 1 << 20, 65536, {UringArea{0, 1 << 20}, UringArea{1, 0}}});
        l.capacity_bytes = 2 << 20;
        return l;
    };
    REQUIRE(detail::check_layout(base()).has_value());
    auto refused = [](const UringLayout& l) {
        auto r = detail::check_layout(l);
        return !r.has_value() && r.error() == Errc::invalid_argument;
    };
    {
        auto l = base();
        l.segments[1].start_bytes += 512;  // gap
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.segments[1].start_bytes -= 512;  // overlap
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.segments[1].areas[1].device = 2;
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.segments[1].chunk_bytes = 65536 * 3;  // size not a multiple of chunk × stripes
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.segments[1].chunk_bytes = 100;
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.segments[0].areas.push_back(UringArea{1, 0});  // linear with two areas
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.capacity_bytes += 512;
        CHECK(refused(l));
    }
    {
        auto l = base();
        l.segments[0].size_bytes = 0;
        CHECK(refused(l));
    }
    CHECK(refused(UringLayout{}));
}

TEST_CASE("a layout whose area runs past its device is refused at creation",
          "[blkback][uring][hostile]") {
    hv::test::TempDir dir("hvkit-blk");
    auto l = sample_layout(dir);
    l.segments[2].areas[0].base_bytes = (4 << 20) - (256 << 10);  // needs 512 KiB, has 256
    auto e = detail::make_uring_layout_engine(l, {});
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error() == Errc::out_of_range);
}

TEST_CASE("writes across segment and stripe boundaries land where the layout says",
          "[blkback][uring]") {
    hv::test::TempDir dir("hvkit-blk");
    const auto l = sample_layout(dir);
    auto made = detail::make_uring_layout_engine(l, {});
    REQUIRE(made.has_value());
    auto& e = **made;
    CHECK(e.properties().capacity_bytes == l.capacity_bytes);
    const std::uint32_t seed = 77;
    INFO("seed " << seed);
    AlignedBuf src(l.capacity_bytes);
    src.fill(seed);
    // The whole device in 256 KiB requests, each as three uneven iovecs, so requests cross
    // the 1 MiB and 2 MiB segment boundaries only inside their pieces.
    const std::uint64_t step = 256 << 10;
    std::uint64_t cookie = 0;
    for (std::uint64_t off = 512 * 3; off < l.capacity_bytes; off += step) {
        const std::uint64_t len = std::min<std::uint64_t>(step, l.capacity_bytes - off);
        const std::uint64_t a = 512 * 7, b = len / 2 - a;
        std::vector<iovec> iov{src.iov(off, a), src.iov(off + a, b),
                               src.iov(off + a + b, len - a - b)};
        REQUIRE(e.queue_writev(off, iov, cookie++).has_value());
    }
    {
        std::vector<iovec> head{src.iov(0, 512 * 3)};
        REQUIRE(e.queue_writev(0, head, cookie++).has_value());
    }
    REQUIRE(e.submit().has_value());
    auto got = reap_n(e, cookie);
    REQUIRE(got.size() == cookie);
    for (const auto& c : got) {
        CHECK(c.result > 0);
    }
    const auto pv0 = read_file(l.devices[0]);
    const auto pv1 = read_file(l.devices[1]);
    for (std::uint64_t off = 0; off < l.capacity_bytes; off += 512) {
        const auto [dev, at] = reference_map(l, off);
        const auto& pv = dev == 0 ? pv0 : pv1;
        REQUIRE(std::memcmp(pv.data() + at, src.data() + off, 512) == 0);
    }
    // And it reads back through the engine as one request spanning everything.
    AlignedBuf dst(l.capacity_bytes);
    REQUIRE(e.queue_readv(0, std::vector<iovec>{dst.iov(0, l.capacity_bytes)}, 999).has_value());
    CHECK(run_one(e, 999) == static_cast<std::int32_t>(l.capacity_bytes));
    CHECK(dst.same(src));
}

TEST_CASE("fixed-buffer requests are split at stripe boundaries too", "[blkback][uring]") {
    hv::test::TempDir dir("hvkit-blk");
    const auto l = sample_layout(dir);
    auto made = detail::make_uring_layout_engine(l, {});
    REQUIRE(made.has_value());
    auto& e = **made;
    AlignedBuf arena(512 << 10);
    arena.fill(5);
    REQUIRE(e.register_buffers(std::vector<iovec>{arena.iov(0, 256 << 10), arena.iov(256 << 10, 256 << 10)})
                .has_value());
    // 200 KiB starting 8 KiB before the linear/striped boundary: 4 parts at least.
    const std::uint64_t off = (1 << 20) - 8192;
    const std::vector<FixedIovec> w{{arena.data(), 100 << 10, 0},
                                    {arena.data() + (256 << 10), 100 << 10, 1}};
    REQUIRE(e.queue_writev_fixed(off, w, 1).has_value());
    CHECK(run_one(e, 1) == 200 << 10);
    const auto pv0 = read_file(l.devices[0]);
    const auto pv1 = read_file(l.devices[1]);
    for (std::uint64_t i = 0; i < (200 << 10); i += 512) {
        const std::byte* want = i < (100 << 10) ? arena.data() + i
                                                : arena.data() + (256 << 10) + (i - (100 << 10));
        const auto [dev, at] = reference_map(l, off + i);
        REQUIRE(std::memcmp((dev == 0 ? pv0 : pv1).data() + at, want, 512) == 0);
    }
}

TEST_CASE("a discard across stripes punches exactly the mapped ranges", "[blkback][uring]") {
    hv::test::TempDir dir("hvkit-blk");
    const auto l = sample_layout(dir);
    auto made = detail::make_uring_layout_engine(l, {});
    REQUIRE(made.has_value());
    auto& e = **made;
    AlignedBuf ones(l.capacity_bytes);
    std::memset(ones.data(), 0xab, l.capacity_bytes);
    REQUIRE(e.queue_writev(0, std::vector<iovec>{ones.iov(0, l.capacity_bytes)}, 1).has_value());
    CHECK(run_one(e, 1) == static_cast<std::int32_t>(l.capacity_bytes));
    // From inside the linear segment, across every stripe, into the last segment.
    const std::uint64_t lo = (1 << 20) - (12 << 10) + 512, hi = (2 << 20) + 4096 + 1024;
    REQUIRE(e.queue_discard(lo, hi - lo, 2).has_value());
    CHECK(run_one(e, 2) == 0);
    const auto pv0 = read_file(l.devices[0]);
    const auto pv1 = read_file(l.devices[1]);
    for (std::uint64_t off = 0; off < l.capacity_bytes; off += 512) {
        const auto [dev, at] = reference_map(l, off);
        const auto& pv = dev == 0 ? pv0 : pv1;
        const std::byte want = (off >= lo && off < hi) ? std::byte{0} : std::byte{0xab};
        INFO("offset " << off);
        REQUIRE(pv[at] == want);
        REQUIRE(pv[at + 511] == want);
    }
}

TEST_CASE("a request needing more parts than max_parts is refused and never completes",
          "[blkback][uring][hostile]") {
    hv::test::TempDir dir("hvkit-blk");
    const auto l = sample_layout(dir);
    UringEngineOptions o;
    o.max_parts = 4;
    auto made = detail::make_uring_layout_engine(l, o);
    REQUIRE(made.has_value());
    auto& e = **made;
    AlignedBuf buf(512 << 10);
    // 320 KiB inside the striped segment: five 64 KiB chunks.
    auto r = e.queue_readv(1 << 20, std::vector<iovec>{buf.iov(0, 320 << 10)}, 1);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == Errc::too_many_parts);
    CHECK(e.in_flight() == 0);
    // Four chunks fit.
    REQUIRE(e.queue_readv(1 << 20, std::vector<iovec>{buf.iov(0, 256 << 10)}, 2).has_value());
    CHECK(run_one(e, 2) == 256 << 10);
}

TEST_CASE("a full submission queue answers busy even with request slots free",
          "[blkback][uring]") {
    hv::test::TempDir dir("hvkit-blk");
    const auto l = sample_layout(dir);
    UringEngineOptions o;
    o.queue_depth = 4;
    o.max_parts = 4;  // SQ of 4 entries
    auto made = detail::make_uring_layout_engine(l, o);
    REQUIRE(made.has_value());
    auto& e = **made;
    AlignedBuf buf(256 << 10);
    // 256 KiB in the striped segment: four chunks, four SQEs — the whole SQ.
    REQUIRE(e.queue_readv(1 << 20, std::vector<iovec>{buf.iov(0, 256 << 10)}, 1).has_value());
    auto busy = e.queue_readv(0, std::vector<iovec>{buf.iov(0, 4096)}, 2);
    REQUIRE_FALSE(busy.has_value());
    CHECK(busy.error() == Errc::busy);
    CHECK(e.in_flight() == 1);
    REQUIRE(e.submit().has_value());  // the SQ drains into the kernel
    REQUIRE(e.queue_readv(0, std::vector<iovec>{buf.iov(0, 4096)}, 3).has_value());
    REQUIRE(e.submit().has_value());
    auto got = reap_n(e, 2);
    REQUIRE(got.size() == 2);
    CHECK(got[0].cookie + got[1].cookie == 4);  // cookies 1 and 3, never 2
    CHECK(reap_n(e, 1, 20).empty());
}

TEST_CASE("a failing part completes its request once, with the error", "[blkback][uring]") {
    hv::test::TempDir dir("hvkit-blk");
    const auto l = sample_layout(dir);
    auto made = detail::make_uring_layout_engine(l, {});
    REQUIRE(made.has_value());
    auto& e = **made;
    // Shrink pv1 behind the engine's back: reads of its areas come back short.
    REQUIRE(::truncate(l.devices[1].c_str(), 4096) == 0);
    AlignedBuf buf(256 << 10);
    REQUIRE(e.queue_readv(1 << 20, std::vector<iovec>{buf.iov(0, 256 << 10)}, 5).has_value());
    REQUIRE(e.submit().has_value());
    auto got = reap_n(e, 1);
    REQUIRE(got.size() == 1);
    CHECK(reap_n(e, 1, 50).empty());  // and never a second time
    CHECK(got[0].cookie == 5);
    CHECK(got[0].result == -EIO);
    CHECK(e.in_flight() == 0);
}

TEST_CASE("destroying an engine waits for its I/O in flight", "[blkback][uring]") {
    hv::test::TempDir dir("hvkit-blk");
    const std::string path = (dir / "disk.img").string();
    make_file(path, 1 << 20);
    AlignedBuf src(1 << 20);
    src.fill(3);
    {
        auto e = make_uring_engine(path, {});
        REQUIRE(e.has_value());
        for (std::uint64_t i = 0; i < 16; ++i) {
            REQUIRE((*e)->queue_writev(i * 65536, std::vector<iovec>{src.iov(i * 65536, 65536)}, i)
                        .has_value());
            if (i == 7) {
                REQUIRE((*e)->submit().has_value());
            }
        }
        // Half submitted, half only queued, nothing reaped: the destructor finishes both.
    }
    const auto data = read_file(path);
    CHECK(std::memcmp(data.data(), src.data(), 1 << 20) == 0);
}

TEST_CASE("paths that are neither files nor block devices are refused", "[blkback][uring]") {
    auto e = make_uring_engine("/dev/null", {});
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error() == Errc::invalid_argument);
    auto missing = make_uring_engine("/nonexistent/disk.img", {});
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error() == std::errc::no_such_file_or_directory);
    hv::test::TempDir dir("hvkit-blk");
    make_file((dir / "empty").string(), 0);
    CHECK(make_uring_engine((dir / "empty").string(), {}).error() == Errc::invalid_argument);
}

TEST_CASE("a 4096-byte logical block size is enforced on files", "[blkback][uring][hostile]") {
    hv::test::TempDir dir("hvkit-blk");
    const std::string path = (dir / "disk.img").string();
    make_file(path, 1 << 20);
    UringEngineOptions o;
    o.file_block_size = 4096;
    auto e = make_uring_engine(path, o);
    REQUIRE(e.has_value());
    CHECK((*e)->properties().logical_block_size == 4096);
    AlignedBuf buf(8192);
    CHECK((*e)->queue_readv(512, std::vector<iovec>{buf.iov(0, 4096)}, 1).error() ==
          Errc::misaligned);
    CHECK((*e)->queue_readv(0, std::vector<iovec>{buf.iov(0, 512)}, 1).error() == Errc::misaligned);
    o.file_block_size = 1024;
    CHECK(make_uring_engine(path, o).error() == Errc::invalid_argument);
}

}  // namespace
}  // namespace hv::blk::test
