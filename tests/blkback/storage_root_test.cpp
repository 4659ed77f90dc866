// Root tests: io_uring on a loop device, and LVM volumes (made here on loop devices, without
// device-mapper) served by mapping their segments onto the PVs. Every byte written through the
// engine is found on the PVs where LVM's metadata puts it.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>

#include "blkback/lvm.hpp"
#include "engine_test_util.hpp"
#include "root_fixture.hpp"

namespace hv::blk::test {
namespace {

/// `len` bytes of a device from `off`; len 0: up to the end.
std::vector<std::byte> read_dev(const std::string& path, std::uint64_t off, std::uint64_t len) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    if (len == 0) {
        len = static_cast<std::uint64_t>(::lseek(fd, 0, SEEK_END)) - off;
    }
    std::vector<std::byte> out(len);
    REQUIRE(::pread(fd, out.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
    ::close(fd);
    return out;
}

/// Where LV byte `off` lives according to the metadata, computed stripe by stripe (dm-stripe:
/// chunk c goes to stripe c mod n, row c div n), independently of the engine's mapping code.
std::pair<std::string, std::uint64_t> lv_to_pv(const LvmVolume& v, std::uint64_t off) {
    for (const LvmSegment& s : v.segments) {
        if (off < s.start_bytes || off >= s.start_bytes + s.size_bytes) {
            continue;
        }
        const std::uint64_t rel = off - s.start_bytes;
        if (!s.striped) {
            return {s.areas[0].pv_path, s.areas[0].pv_offset_bytes + rel};
        }
        const std::uint64_t chunk = rel / s.stripe_size_bytes;
        const auto& a = s.areas[chunk % s.areas.size()];
        return {a.pv_path, a.pv_offset_bytes + (chunk / s.areas.size()) * s.stripe_size_bytes +
                               rel % s.stripe_size_bytes};
    }
    FAIL("offset outside the LV");
    return {};
}

/// Writes the whole LV through `e` in `step`-byte requests of two iovecs each.
void write_all(BlockEngine& e, const AlignedBuf& src, std::uint64_t step) {
    const std::uint64_t cap = e.properties().capacity_bytes;
    std::uint64_t n = 0;
    for (std::uint64_t off = 0; off < cap; off += step) {
        const std::uint64_t len = std::min(step, cap - off);
        const std::uint64_t half = len / 2 / 512 * 512;
        std::vector<iovec> iov{src.iov(off, half), src.iov(off + half, len - half)};
        auto q = e.queue_writev(off, iov, n);
        if (!q && q.error() == Errc::busy) {
            REQUIRE(e.submit().has_value());
            REQUIRE(reap_n(e, e.in_flight()).size() > 0);
            off -= step;
            continue;
        }
        REQUIRE(q.has_value());
        ++n;
    }
    REQUIRE(e.submit().has_value());
    const auto got = reap_n(e, e.in_flight());
    for (const auto& c : got) {
        REQUIRE(c.result > 0);
    }
    REQUIRE(e.in_flight() == 0);
}

/// Every 512-byte block of the LV is on its PV where the metadata says.
void check_placement(const LvmVolume& v, const AlignedBuf& src) {
    std::map<std::string, std::vector<std::byte>> pvs;
    for (const auto& s : v.segments) {
        for (const auto& a : s.areas) {
            if (!pvs.count(a.pv_path)) {
                pvs[a.pv_path] = read_dev(a.pv_path, 0, 0);
            }
        }
    }
    for (std::uint64_t off = 0; off < v.size_bytes; off += 512) {
        const auto [pv, at] = lv_to_pv(v, off);
        INFO("LV offset " << off << " -> " << pv << " @" << at);
        REQUIRE(std::memcmp(pvs[pv].data() + at, src.data() + off, 512) == 0);
    }
}

TEST_CASE("uring on a loop device round-trips data, flushes and discards",
          "[blkback][root][uring]") {
    require_root_storage();
    hv::test::TempDir dir("hvkit-blk-loop");
    LoopDevice loop((dir / "disk.img").string(), 16 << 20);
    auto made = make_uring_engine(loop.path(), {});
    REQUIRE(made.has_value());
    auto& e = **made;
    CHECK(e.properties().capacity_bytes == 16 << 20);
    CHECK(e.properties().logical_block_size == 512);
    AlignedBuf src(1 << 20), dst(1 << 20);
    src.fill(0x10);
    REQUIRE(e.queue_writev(4 << 20, std::vector<iovec>{src.iov(0, 1 << 20)}, 1).has_value());
    CHECK(run_one(e, 1) == 1 << 20);
    REQUIRE(e.queue_flush(2).has_value());
    CHECK(run_one(e, 2) == 0);
    // What the device holds, read around the engine:
    const auto raw = read_dev(loop.path(), 4 << 20, 1 << 20);
    CHECK(std::memcmp(raw.data(), src.data(), 1 << 20) == 0);
    REQUIRE(e.register_buffers(std::vector<iovec>{dst.iov(0, 1 << 20)}).has_value());
    REQUIRE(e.queue_readv_fixed(4 << 20, std::vector<FixedIovec>{{dst.data(), 1 << 20, 0}}, 3)
                .has_value());
    CHECK(run_one(e, 3) == 1 << 20);
    CHECK(dst.same(src));
    if (e.properties().discard) {
        REQUIRE(e.queue_discard((4 << 20) + 4096, 8192, 4).has_value());
        CHECK(run_one(e, 4) == 0);
        const auto after = read_dev(loop.path(), (4 << 20) + 4096, 8192);
        CHECK(std::all_of(after.begin(), after.end(), [](std::byte b) { return b == std::byte{0}; }));
    }
}

TEST_CASE("a loop device with 4096-byte sectors is served with that block size",
          "[blkback][root][uring]") {
    require_root_storage();
    hv::test::TempDir dir("hvkit-blk-loop");
    LoopDevice loop((dir / "disk4k.img").string(), 4 << 20, 4096);
    const std::string& dev = loop.path();
    auto made = make_uring_engine(dev, {});
    REQUIRE(made.has_value());
    auto& e = **made;
    CHECK(e.properties().logical_block_size == 4096);
    AlignedBuf buf(8192);
    buf.fill(9);
    CHECK(e.queue_writev(512, std::vector<iovec>{buf.iov(0, 4096)}, 1).error() == Errc::misaligned);
    CHECK(e.queue_writev(0, std::vector<iovec>{buf.iov(0, 512)}, 1).error() == Errc::misaligned);
    REQUIRE(e.queue_writev(4096, std::vector<iovec>{buf.iov(0, 8192)}, 2).has_value());
    CHECK(run_one(e, 2) == 8192);
    const auto raw = read_dev(dev, 4096, 8192);
    CHECK(std::memcmp(raw.data(), buf.data(), 8192) == 0);
}

TEST_CASE("lvm_resolve reads a linear LV's geometry from LVM", "[blkback][root][lvm]") {
    require_root_storage();
    TestVg vg(1, 32 << 20);
    vg.lvcreate("-L 8M -n lin", vg.pv(0));
    auto v = lvm_resolve(vg.name(), "lin", LvmScan{vg.devices()});
    REQUIRE(v.has_value());
    CHECK(v->size_bytes == 8 << 20);
    CHECK(v->extent_size_bytes == 1 << 20);
    REQUIRE(v->segments.size() == 1);
    REQUIRE(v->segments[0].areas.size() == 1);
    CHECK(v->segments[0].areas[0].pv_path == vg.pv(0));
    CHECK(v->segments[0].areas[0].start_extent == 0);
    CHECK(v->segments[0].areas[0].pe_start_bytes == 1 << 20);  // LVM's default data alignment
}

TEST_CASE("an LV missing from its VG is not found", "[blkback][root][lvm]") {
    require_root_storage();
    TestVg vg(1, 16 << 20);
    vg.lvcreate("-L 4M -n here", vg.pv(0));
    auto v = lvm_resolve(vg.name(), "elsewhere", LvmScan{vg.devices()});
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == Errc::lvm_not_found);
    auto no_vg = lvm_resolve(vg.name() + "nope", "here", LvmScan{vg.devices()});
    REQUIRE_FALSE(no_vg.has_value());
    CHECK(no_vg.error() == Errc::lvm_not_found);
}

TEST_CASE("a scan limited to one PV of a striped LV does not serve it", "[blkback][root][lvm]") {
    require_root_storage();
    TestVg vg(2, 16 << 20);
    vg.lvcreate("-i 2 -I 64k -L 8M -n str", vg.pv(0) + " " + vg.pv(1));
    auto v = lvm_resolve(vg.name(), "str", LvmScan{{vg.pv(0)}});
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == Errc::lvm_not_found);
}

TEST_CASE("a linear LV over two PVs is served without device-mapper, every byte in place",
          "[blkback][root][lvm]") {
    require_root_storage();
    TestVg vg(2, 32 << 20);
    vg.lvcreate("-L 3M -n pad", vg.pv(0));   // the LV under test starts at extent 3 of pv0
    vg.lvcreate("-L 5M -n lin", vg.pv(0));
    vg.lvextend("lin", "-L +6M", vg.pv(1));  // second segment on pv1
    auto v = lvm_resolve(vg.name(), "lin", LvmScan{vg.devices()});
    REQUIRE(v.has_value());
    REQUIRE(v->segments.size() == 2);
    CHECK(v->segments[0].areas[0].pv_path == vg.pv(0));
    CHECK(v->segments[0].areas[0].start_extent == 3);
    CHECK(v->segments[1].start_bytes == 5 << 20);
    CHECK(v->segments[1].areas[0].pv_path == vg.pv(1));
    auto made = open_lvm_volume(vg.name(), "lin", LvmScan{vg.devices()});
    REQUIRE(made.has_value());
    auto& e = **made;
    REQUIRE(e.properties().capacity_bytes == 11 << 20);
    const std::uint32_t seed = 4242;
    INFO("seed " << seed);
    AlignedBuf src(11 << 20);
    src.fill(seed);
    write_all(e, src, 384 << 10);  // 384 KiB steps: one request straddles the 5 MiB boundary
    check_placement(*v, src);
    AlignedBuf dst(11 << 20);
    REQUIRE(e.queue_readv(0, std::vector<iovec>{dst.iov(0, 11 << 20)}, 77).has_value());
    CHECK(run_one(e, 77) == 11 << 20);
    CHECK(dst.same(src));
}

TEST_CASE("a striped LV over two PVs is served without device-mapper, every byte in place",
          "[blkback][root][lvm]") {
    require_root_storage();
    TestVg vg(2, 32 << 20);
    vg.lvcreate("-L 2M -n pad", vg.pv(1));  // stripes start at different extents per PV
    vg.lvcreate("-i 2 -I 64k -L 8M -n str", vg.pv(0) + " " + vg.pv(1));
    auto v = lvm_resolve(vg.name(), "str", LvmScan{vg.devices()});
    REQUIRE(v.has_value());
    REQUIRE(v->segments.size() == 1);
    const auto& s = v->segments[0];
    CHECK(s.striped);
    CHECK(s.stripe_size_bytes == 64 << 10);
    REQUIRE(s.areas.size() == 2);
    CHECK(s.areas[0].pv_path == vg.pv(0));
    CHECK(s.areas[0].start_extent == 0);
    CHECK(s.areas[1].pv_path == vg.pv(1));
    CHECK(s.areas[1].start_extent == 2);
    auto made = open_lvm_volume(vg.name(), "str", LvmScan{vg.devices()});
    REQUIRE(made.has_value());
    auto& e = **made;
    REQUIRE(e.properties().capacity_bytes == 8 << 20);
    const std::uint32_t seed = 31337;
    INFO("seed " << seed);
    AlignedBuf src(8 << 20);
    src.fill(seed);
    write_all(e, src, (200 << 10) + 512);  // misaligned to the stripes on purpose
    check_placement(*v, src);
    // Discard across a stripe boundary: exactly the mapped blocks read zero on the PVs.
    const std::uint64_t lo = (64 << 10) - 4096, len = 128 << 10;
    REQUIRE(e.properties().discard);
    REQUIRE(e.queue_discard(lo, len, 9).has_value());
    CHECK(run_one(e, 9) == 0);
    for (std::uint64_t off = lo - 4096; off < lo + len + 4096; off += 512) {
        const auto [pv, at] = lv_to_pv(*v, off);
        const auto blk = read_dev(pv, at, 512);
        const bool zero = std::all_of(blk.begin(), blk.end(), [](std::byte b) { return b == std::byte{0}; });
        INFO("LV offset " << off);
        CHECK(zero == (off >= lo && off < lo + len));
    }
}

/// /dev/<vg>/<lv> made by hand (what device-mapper would make), removed on destruction.
class FakeDmNode {
public:
    FakeDmNode(const std::string& vg, const std::string& lv, const std::string& target)
        : dir_("/dev/" + vg), node_(dir_ + "/" + lv) {
        REQUIRE(::mkdir(dir_.c_str(), 0755) == 0);
        REQUIRE(::symlink(target.c_str(), node_.c_str()) == 0);
    }
    FakeDmNode(const FakeDmNode&) = delete;
    FakeDmNode& operator=(const FakeDmNode&) = delete;
    ~FakeDmNode() {
        ::unlink(node_.c_str());
        ::rmdir(dir_.c_str());
    }

private:
    std::string dir_;
    std::string node_;
};

TEST_CASE("when /dev/VG/LV is a block device the LV is opened there", "[blkback][root][lvm]") {
    require_root_storage();
    TestVg vg(1, 16 << 20);
    vg.lvcreate("-L 4M -n lin", vg.pv(0));
    hv::test::TempDir dir("hvkit-blk-dm");
    LoopDevice stand_in((dir / "dm.img").string(), 2 << 20);  // a different size on purpose
    FakeDmNode node(vg.name(), "lin", stand_in.path());
    auto made = open_lvm_volume(vg.name(), "lin", LvmScan{vg.devices()});
    REQUIRE(made.has_value());
    CHECK((*made)->properties().capacity_bytes == 2 << 20);
}

}  // namespace
}  // namespace hv::blk::test
