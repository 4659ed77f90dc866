// A raw block device as a vbd end to end (root: loop devices): a loop device with 4096-byte
// logical sectors makes a vbd of 4096-byte sectors — I/O in whole 4096-byte blocks works
// (direct and indirect), a request not aligned to them is answered with an error and reaches
// no disk (xen-abi §5.3: sector_number stays in 512-byte units) — and a 512-byte one still
// serves single sectors. Data is checked on the loop device's backing file.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>

#include "e2e_harness.hpp"
#include "root_fixture.hpp"

using namespace hv::blk::test;
using namespace hv::rings;
using hv::blk::BackendOptions;
using hv::blk::DataMode;

namespace {

constexpr std::uint64_t kDisk = 8ULL << 20;

unsigned physical_block_size(const std::string& dev) {
    hv::UniqueFd fd(::open(dev.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    unsigned pbsz = 0;
    REQUIRE(::ioctl(fd.get(), BLKPBSZGET, &pbsz) == 0);
    return pbsz;
}

bool all_zero(const std::vector<std::byte>& v) {
    return std::all_of(v.begin(), v.end(), [](std::byte b) { return b == std::byte{0}; });
}

}  // namespace

TEST_CASE("a loop device with 4096-byte logical sectors is a vbd of 4096-byte sectors",
          "[blkback][root][e2e][sector-size]") {
    require_root_storage();
    const auto mode = GENERATE(DataMode::map, DataMode::copy);
    INFO("mode " << (mode == DataMode::map ? "map" : "copy"));
    hv::test::TempDir dir("hvkit-blk-4k");
    const std::string file = (dir / "disk4k.img").string();
    LoopDevice loop(file, kDisk, 4096);
    BackendOptions opt;
    opt.mode = mode;
    Env env(opt);
    Guest g(env, "fe", 2048);
    Vbd v(env, g, 51712, "phy:" + loop.path(), {}, {{"type", "phy"}});
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    CHECK(v.backend_key("sector-size") == "4096");
    CHECK(v.backend_key("physical-sector-size") == std::to_string(physical_block_size(loop.path())));
    CHECK(std::stoul(v.backend_key("physical-sector-size")) % 4096 == 0);
    CHECK(v.backend_key("sectors") == std::to_string(kDisk / 512));  // still 512-byte units
    if (v.backend_key("feature-discard") == "1") {
        CHECK(std::stoul(v.backend_key("discard-granularity")) % 4096 == 0);
    }
    v.connect();

    // Whole blocks: 3 pages at 512-byte sector 24 (block 3).
    write_read_check(v, file, 0, 24, 3, 1);

    // Indirect: 64 whole pages at block 100, written then read back.
    {
        Page ind = v.page(/*readonly=*/true);
        auto* segs = reinterpret_cast<blkif_request_segment*>(ind.data);
        std::vector<Page> data;
        for (unsigned i = 0; i < 64; ++i) {
            data.push_back(v.page());
            fill(data.back().data, 4096, 500 + i);
            segs[i] = seg(data.back().gref);
        }
        const std::uint64_t sector = 100 * 8;
        REQUIRE(v.submit(0, v.indirect(BLKIF_OP_WRITE, 40, sector, 64, {ind.gref})).status ==
                BLKIF_RSP_OKAY);
        const auto on_disk = read_file(file, sector * 512, 64 * 4096);
        for (unsigned i = 0; i < 64; ++i) {
            REQUIRE(std::memcmp(on_disk.data() + std::size_t{i} * 4096, data[i].data, 4096) == 0);
            std::memset(data[i].data, 0, 4096);
        }
        REQUIRE(v.submit(0, v.indirect(BLKIF_OP_READ, 41, sector, 64, {ind.gref})).status ==
                BLKIF_RSP_OKAY);
        for (unsigned i = 0; i < 64; ++i) {
            REQUIRE(std::memcmp(on_disk.data() + std::size_t{i} * 4096, data[i].data, 4096) == 0);
        }
    }

    // Not aligned to 4096 bytes: each answered with an error, nothing written. The targets
    // (blocks 200..203) are otherwise untouched, so they must still read as zeroes.
    Page p = v.page();
    fill(p.data, 4096, 77);
    Page ind = v.page(/*readonly=*/true);
    auto* isegs = reinterpret_cast<blkif_request_segment*>(ind.data);
    const std::uint64_t b = 200 * 8;
    struct Bad {
        const char* what;
        std::vector<std::byte> req;
    };
    std::vector<Bad> bad;
    bad.push_back({"sector_number 1 past a block", v.rw(BLKIF_OP_WRITE, 50, b + 1, {seg(p.gref)})});
    bad.push_back({"sector_number half a block in", v.rw(BLKIF_OP_WRITE, 51, b + 4, {seg(p.gref)})});
    bad.push_back({"a 2 KiB segment", v.rw(BLKIF_OP_WRITE, 52, b, {seg(p.gref, 0, 3)})});
    bad.push_back({"a segment from mid-page", v.rw(BLKIF_OP_WRITE, 53, b, {seg(p.gref, 4, 7), seg(p.gref, 0, 3)})});
    bad.push_back({"a 512-byte read", v.rw(BLKIF_OP_READ, 54, b, {seg(p.gref, 0, 0)})});
    bad.push_back({"indirect, sector_number not on a block", v.indirect(BLKIF_OP_WRITE, 55, b + 2, 1, {ind.gref})});
    for (auto& x : bad) {
        INFO(x.what);
        isegs[0] = seg(p.gref);
        const auto r = v.submit(0, x.req);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    {
        INFO("indirect with a 1 KiB segment");
        isegs[0] = seg(p.gref);
        isegs[1] = seg(p.gref, 0, 1);
        CHECK(v.submit(0, v.indirect(BLKIF_OP_WRITE, 56, b, 2, {ind.gref})).status == BLKIF_RSP_ERROR);
    }
    CHECK(all_zero(read_file(file, b * 512, 4 * 4096)));
    // The vbd still serves aligned I/O afterwards.
    write_read_check(v, file, 0, b + 8, 1, 2);
    CHECK(v.backend_key("state") == std::to_string(static_cast<int>(XenbusState::XenbusStateConnected)));
}

TEST_CASE("a loop device with 512-byte logical sectors serves single sectors",
          "[blkback][root][e2e][sector-size]") {
    require_root_storage();
    hv::test::TempDir dir("hvkit-blk-512");
    const std::string file = (dir / "disk512.img").string();
    LoopDevice loop(file, kDisk);
    Env env;
    Guest g(env, "fe");
    Vbd v(env, g, 51712, "phy:" + loop.path(), {}, {{"type", "phy"}});
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    CHECK(v.backend_key("sector-size") == "512");
    CHECK(v.backend_key("sectors") == std::to_string(kDisk / 512));
    v.connect();
    // Sector 3 alone, from the second sector of a page.
    Page w = v.page();
    fill(w.data, 4096, 9);
    REQUIRE(v.submit(0, v.rw(BLKIF_OP_WRITE, 1, 3, {seg(w.gref, 1, 1)})).status == BLKIF_RSP_OKAY);
    const auto on_disk = read_file(file, 0, 5 * 512);
    CHECK(std::memcmp(on_disk.data() + 3 * 512, w.data + 512, 512) == 0);
    CHECK(all_zero(std::vector<std::byte>(on_disk.begin(), on_disk.begin() + 3 * 512)));
    CHECK(all_zero(std::vector<std::byte>(on_disk.begin() + 4 * 512, on_disk.end())));
    Page r = v.page();
    std::memset(r.data, 0xEE, 4096);
    REQUIRE(v.submit(0, v.rw(BLKIF_OP_READ, 2, 3, {seg(r.gref, 5, 5)})).status == BLKIF_RSP_OKAY);
    CHECK(std::memcmp(r.data + 5 * 512, w.data + 512, 512) == 0);
    CHECK(r.data[0] == std::byte{0xEE});  // only the segment's sector was written
    // Whole pages at an odd sector.
    write_read_check(v, file, 0, 17, 2, 3);
}
