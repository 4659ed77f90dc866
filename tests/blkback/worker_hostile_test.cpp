// RingWorker against a hostile frontend: every malformed request is answered as Linux
// blkback answers it (id echoed), and the ring keeps serving; a bogus producer index halts only
// that ring and closes only that vbd.
#include <catch2/catch.hpp>
#include <cstring>

#include "e2e_harness.hpp"

using namespace hv::blk::test;
using namespace hv::rings;
using hv::blk::BackendOptions;
using hv::blk::DataMode;
using hv::DomId;
using hv::GrantRef;

namespace {

constexpr std::uint64_t kHostileDisk = 4ULL << 20;

/// A good write still works afterwards (the ring was not disturbed).
void still_serves(Vbd& v, unsigned q = 0) {
    Page p = v.page();
    fill(p.data, 4096, 1234);
    auto r = v.submit(q, v.rw(BLKIF_OP_WRITE, 0xABCDEF, 16, {seg(p.gref)}));
    CHECK(r.id == 0xABCDEF);
    CHECK(r.status == BLKIF_RSP_OKAY);
}

}  // namespace

TEST_CASE("malformed requests get an error response with their id and the ring goes on",
          "[blkback][hostile]") {
    const auto mode = GENERATE(DataMode::map, DataMode::copy);
    const char* protocol = GENERATE("x86_64-abi", "x86_32-abi");
    INFO("mode " << (mode == DataMode::map ? "map" : "copy") << " " << protocol);
    BackendOptions opt;
    opt.mode = mode;
    Env env(opt);
    Guest g(env, "fe");
    Guest other(env, "other");
    const auto img = env.image("disk.img", kHostileDisk);
    VbdOptions o;
    o.protocol = protocol;
    Vbd v(env, g, 51712, img, o);
    v.connect();
    Page p = v.page();
    const std::uint64_t end = kHostileDisk / 512;

    SECTION("nr_segments 0 on a read") {
        auto r = v.submit(0, v.rw(BLKIF_OP_READ, 11, 0, {}));
        CHECK(r.id == 11);
        CHECK(r.operation == BLKIF_OP_READ);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    SECTION("nr_segments above 11") {
        auto r = v.submit(0, v.rw(BLKIF_OP_WRITE, 12, 0, {seg(p.gref)}, 12));
        CHECK(r.id == 12);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    SECTION("first_sect > last_sect") {
        auto r = v.submit(0, v.rw(BLKIF_OP_READ, 13, 0, {seg(p.gref, 5, 4)}));
        CHECK(r.id == 13);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    SECTION("last_sect > 7") {
        auto r = v.submit(0, v.rw(BLKIF_OP_READ, 14, 0, {seg(p.gref, 0, 8)}));
        CHECK(r.id == 14);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    SECTION("sectors past the end, and an overflowing sector number") {
        CHECK(v.submit(0, v.rw(BLKIF_OP_READ, 15, end - 7, {seg(p.gref)})).status ==
              BLKIF_RSP_ERROR);
        CHECK(v.submit(0, v.rw(BLKIF_OP_READ, 16, end, {seg(p.gref, 0, 0)})).status ==
              BLKIF_RSP_ERROR);
        CHECK(v.submit(0, v.rw(BLKIF_OP_WRITE, 17, UINT64_MAX - 3, {seg(p.gref)})).status ==
              BLKIF_RSP_ERROR);
        CHECK(v.submit(0, v.discard(18, end - 8, 16)).status == BLKIF_RSP_ERROR);
        // The last page itself is fine.
        CHECK(v.submit(0, v.rw(BLKIF_OP_READ, 19, end - 8, {seg(p.gref)})).status ==
              BLKIF_RSP_OKAY);
    }
    SECTION("a grant ref that was never granted") {
        auto r = v.submit(0, v.rw(BLKIF_OP_READ, 20, 0, {seg(GrantRef(4000))}));
        CHECK(r.id == 20);
        CHECK(r.status == BLKIF_RSP_ERROR);
        CHECK(v.submit(0, v.rw(BLKIF_OP_WRITE, 21, 0, {seg(p.gref), seg(GrantRef(999999))}))
                  .status == BLKIF_RSP_ERROR);
    }
    SECTION("a grant made to another domain") {
        const auto f = g.alloc_frame();
        auto ref = g.svc->grants().grant_access(other.domid, f, false);
        REQUIRE(ref);
        CHECK(v.submit(0, v.rw(BLKIF_OP_READ, 22, 0, {seg(*ref)})).status == BLKIF_RSP_ERROR);
        CHECK(v.submit(0, v.rw(BLKIF_OP_WRITE, 23, 0, {seg(*ref)})).status == BLKIF_RSP_ERROR);
    }
    SECTION("a read-only grant as the target of a read") {
        Page ro = v.page(/*readonly=*/true);
        std::memset(ro.data, 0x5A, 4096);
        auto r = v.submit(0, v.rw(BLKIF_OP_READ, 24, 0, {seg(ro.gref)}));
        CHECK(r.id == 24);
        CHECK(r.status == BLKIF_RSP_ERROR);
        CHECK(ro.data[0] == std::byte{0x5A});  // nothing was written into it
        // A read-only grant is fine as the source of a write (non-persistent).
        CHECK(v.submit(0, v.rw(BLKIF_OP_WRITE, 25, 0, {seg(ro.gref)})).status == BLKIF_RSP_OKAY);
    }
    SECTION("an indirect page that is not granted") {
        auto r = v.submit(0, v.indirect(BLKIF_OP_READ, 26, 0, 16, {GrantRef(4001)}));
        CHECK(r.id == 26);
        CHECK(r.operation == BLKIF_OP_READ);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    SECTION("indirect segment counts 0 and above the advertised 256") {
        Page ind = v.page();
        CHECK(v.submit(0, v.indirect(BLKIF_OP_READ, 27, 0, 0, {ind.gref})).status ==
              BLKIF_RSP_ERROR);
        CHECK(v.submit(0, v.indirect(BLKIF_OP_READ, 28, 0, 257, {ind.gref})).status ==
              BLKIF_RSP_ERROR);
    }
    SECTION("an indirect page holding a bad segment") {
        Page ind = v.page();
        auto* segs = reinterpret_cast<blkif_request_segment*>(ind.data);
        segs[0] = seg(p.gref);
        segs[1] = seg(p.gref, 3, 9);
        CHECK(v.submit(0, v.indirect(BLKIF_OP_WRITE, 29, 0, 2, {ind.gref})).status ==
              BLKIF_RSP_ERROR);
    }
    SECTION("indirect_op other than READ/WRITE") {
        Page ind = v.page();
        auto r = v.submit(0, v.indirect(BLKIF_OP_DISCARD, 30, 0, 1, {ind.gref}));
        CHECK(r.id == 30);
        CHECK(r.status == BLKIF_RSP_ERROR);
    }
    SECTION("unknown operations and RESERVED_1 get EOPNOTSUPP") {
        auto r = v.submit(0, v.rw(77, 31, 0, {seg(p.gref)}));
        CHECK(r.id == 31);
        CHECK(r.operation == 77);
        CHECK(r.status == BLKIF_RSP_EOPNOTSUPP);
        r = v.submit(0, v.rw(BLKIF_OP_RESERVED_1, 32, 0, {seg(p.gref)}));
        CHECK(r.id == 32);
        CHECK(r.status == BLKIF_RSP_EOPNOTSUPP);
    }
    still_serves(v);
    CHECK(v.wait_backend(XenbusState::XenbusStateConnected, std::chrono::milliseconds(0)));
}

TEST_CASE("a producer index past the ring halts that ring and closes only that vbd",
          "[blkback][hostile][state]") {
    BackendOptions opt;
    opt.max_queues = 2;
    Env env(opt);
    Guest bad(env, "bad");
    Guest good(env, "good");
    const auto img1 = env.image("bad.img", kHostileDisk);
    const auto img2 = env.image("good.img", kHostileDisk);
    VbdOptions o;
    o.queues = 2;
    Vbd vb(env, bad, 51712, img1, o);
    Vbd vg(env, good, 51712, img2);
    vb.connect();
    vg.connect();
    still_serves(vb, 1);
    const std::uint32_t bogus = GENERATE(33U, 1000U, 0x80000000U);
    INFO("req_prod " << bogus);
    vb.set_req_prod(0, bogus);
    REQUIRE(vb.wait_backend(XenbusState::XenbusStateClosing));
    auto err = env.xs->read("/local/domain/0/error/backend/vbd/" + std::to_string(bad.domid.get()) +
                            "/51712/error");
    REQUIRE(err);
    CHECK(err->find("producer index") != std::string::npos);
    CHECK(vb.responses(0, 1, std::chrono::milliseconds(50)).empty());
    // Another domain's vbd keeps working.
    still_serves(vg);
    CHECK(vg.wait_backend(XenbusState::XenbusStateConnected, std::chrono::milliseconds(0)));
}
