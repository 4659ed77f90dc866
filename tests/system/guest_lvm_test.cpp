// System test of an LV-backed guest disk: a VG on two loop devices over sparse files (unique
// names, removed even when a check fails), the real hv-min daemon and blkback program (which
// resolves the LV with liblvm2cmd and, with no device-mapper here, serves it on its PVs), an
// hv-guest domain with the LV as `phy` disk — and Debian's fio (nbd engine, random writes
// verified with crc32c) on the domain's NBD export. Runs under the `lvm` resource lock.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <vector>

#include "blkback/lvm.hpp"
#include "guest_system.hpp"
#include "root_fixture.hpp"

using hv::blk::test::TestVg;
using hv::test::guest::check_fio_verify;
using hv::test::guest::Disk;
using hv::test::guest::GuestSystem;

namespace {

std::vector<char> pread_all(const std::string& path, std::uint64_t off, std::size_t len) {
    std::vector<char> out(len);
    hv::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    std::size_t done = 0;
    while (done < len) {
        const ssize_t n = ::pread(fd.get(), out.data() + done, len - done,
                                  static_cast<off_t>(off + done));
        REQUIRE(n > 0);
        done += static_cast<std::size_t>(n);
    }
    return out;
}

}  // namespace

TEST_CASE("fio's nbd engine writes randomly to an LV-backed guest disk and verifies it with crc32c",
          "[system][guest][root][lvm]") {
    hv::blk::test::require_root_storage();
    hv::test::skip_unless(std::filesystem::exists("/usr/bin/fio"), "needs fio");
    hv::test::skip_unless(std::filesystem::exists("/usr/bin/nbdcopy"), "needs nbdcopy (libnbd-bin)");
    constexpr std::uint64_t kLv = 8ULL << 20;
    TestVg vg(2, 16ULL << 20);
    vg.lvcreate("-L 3M -n pad", vg.pv(0));  // the disk starts 3 extents into pv0
    vg.lvcreate("-L 4M -n disk", vg.pv(0));
    vg.lvextend("disk", "-L 8M", vg.pv(1));  // its second half is on pv1
    auto vol = hv::blk::lvm_resolve(vg.name(), "disk", hv::blk::LvmScan{vg.devices()});
    REQUIRE(vol);
    REQUIRE(vol->size_bytes == kLv);
    REQUIRE(vol->segments.size() == 2);

    GuestSystem g(kLv, {}, Disk{"/dev/" + vg.name() + "/disk", "phy"});
    check_fio_verify(g.uri(), "8m");  // both segments

    // The bytes fio left are on the PVs where LVM's metadata says: the whole disk read back
    // through the guest's export equals each segment read straight from its PV.
    const std::string out = (g.dir.path() / "out.bin").string();
    auto c = hv::run({"nbdcopy", g.uri(), out}, 60000);
    REQUIRE(c);
    INFO(c->output);
    REQUIRE(c->exit_code == 0);
    const auto disk = pread_all(out, 0, kLv);
    std::uint64_t lv_off = 0;
    for (const auto& segment : vol->segments) {
        REQUIRE(segment.areas.size() == 1);  // linear
        const auto& a = segment.areas.front();
        const auto len = static_cast<std::size_t>(segment.size_bytes);
        const auto on_pv = pread_all(a.pv_path, a.pv_offset_bytes, len);
        INFO("segment at LV offset " << lv_off << " on " << a.pv_path << " @ " << a.pv_offset_bytes);
        CHECK(std::memcmp(on_pv.data(), disk.data() + lv_off, len) == 0);
        lv_off += segment.size_bytes;
    }
    CHECK(lv_off == kLv);
    // fio wrote (most of) the disk: nothing above compared two zero-filled regions only.
    CHECK(std::count(disk.begin(), disk.end(), '\0') < static_cast<std::ptrdiff_t>(kLv / 2));
}
