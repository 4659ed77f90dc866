// An LVM-backed vbd end to end (root: loop devices and the LVM tools; no device-mapper
// assumed, so the LV is served on its PVs): data written by the frontend lands on the PV.
#include <catch2/catch.hpp>
#include <cstring>

#include "blkback/lvm.hpp"
#include "e2e_harness.hpp"
#include "root_fixture.hpp"

using namespace hv::blk::test;
using namespace hv::rings;

TEST_CASE("an LVM logical volume given as VG/LV is served as a vbd",
          "[blkback][root][lvm][e2e]") {
    require_root_storage();
    TestVg vg(2, 32ULL << 20);
    vg.lvcreate("-L 3M -n pad", vg.pv(0));
    vg.lvcreate("-L 4M -n lin", vg.pv(0));
    vg.lvextend("lin", "-L 6M", vg.pv(1));  // a second segment on the other PV
    hv::blk::BackendOptions opt;
    opt.lvm_scan_devices = vg.devices();
    Env env(opt);
    Guest g(env, "fe");
    const std::string spec = GENERATE(std::string("VG/lin"), std::string("/dev/VG/lin"));
    std::string params = spec;
    params.replace(params.find("VG"), 2, vg.name());
    INFO("params " << params);
    Vbd v(env, g, 51712, params, {}, {{"type", "phy"}});
    REQUIRE(v.wait_backend(XenbusState::XenbusStateInitWait));
    CHECK(v.backend_key("sectors") == std::to_string((6ULL << 20) / 512));
    v.connect();
    auto vol = hv::blk::lvm_resolve(vg.name(), "lin", hv::blk::LvmScan{vg.devices()});
    REQUIRE(vol);
    REQUIRE(vol->segments.size() == 2);
    // One request crossing the segment boundary at 4 MiB: 8 pages, 4 on each PV.
    std::vector<Page> pages;
    std::vector<blkif_request_segment> segs;
    for (unsigned i = 0; i < 8; ++i) {
        pages.push_back(v.page());
        fill(pages.back().data, 4096, 70 + i);
        segs.push_back(seg(pages.back().gref));
    }
    const std::uint64_t start = (4ULL << 20) - 4 * 4096;
    REQUIRE(v.submit(0, v.rw(BLKIF_OP_WRITE, 1, start / 512, segs)).status == BLKIF_RSP_OKAY);
    const auto& a0 = vol->segments[0].areas.at(0);
    const auto& a1 = vol->segments[1].areas.at(0);
    const auto on0 = read_file(a0.pv_path, a0.pv_offset_bytes + start, 4 * 4096);
    const auto on1 = read_file(a1.pv_path, a1.pv_offset_bytes, 4 * 4096);
    for (unsigned i = 0; i < 4; ++i) {
        CHECK(std::memcmp(on0.data() + i * 4096, pages[i].data, 4096) == 0);
        CHECK(std::memcmp(on1.data() + i * 4096, pages[4 + i].data, 4096) == 0);
    }
    for (auto& p : pages) {
        std::memset(p.data, 0, 4096);
    }
    REQUIRE(v.submit(0, v.rw(BLKIF_OP_READ, 2, start / 512, segs)).status == BLKIF_RSP_OKAY);
    CHECK(std::memcmp(pages[0].data, on0.data(), 4096) == 0);
    CHECK(std::memcmp(pages[7].data, on1.data() + 3 * 4096, 4096) == 0);
    CHECK(v.submit(0, v.rw(BLKIF_OP_FLUSH_DISKCACHE, 3, 0, {})).status == BLKIF_RSP_OKAY);
}
