// Grant tables: map/unmap/copy with Xen's statuses, the flag protocol, pins and isolation.
#include <fcntl.h>
#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "harness.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace hv::rings;
using namespace std::chrono_literals;

namespace {

std::int16_t map_status(Services& s, domid_t dom, grant_ref_t ref, std::uint32_t flags,
                        grant_handle_t* handle = nullptr) {
    gnttab_map_grant_ref op{};
    op.flags = flags;
    op.ref = ref;
    op.dom = dom;
    REQUIRE(s.grants().map_raw(std::span(&op, 1)));
    if (handle != nullptr) {
        *handle = op.handle;
    }
    return op.status;
}

std::int16_t unmap_status(Services& s, grant_handle_t h, std::uint64_t dev_bus_addr = 0) {
    gnttab_unmap_grant_ref op{};
    op.handle = h;
    op.dev_bus_addr = dev_bus_addr;
    REQUIRE(s.grants().unmap_raw(std::span(&op, 1)));
    return op.status;
}

std::string gntst(std::int16_t st) { return "err gntst " + std::to_string(st); }

}  // namespace

TEST_CASE("a mapped grant shares the page and pins it with GTF_reading/GTF_writing", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    REQUIRE(g.cmd("write 3 100 hello") == "ok");
    const long ref = g.num("grant 0 3 0");
    CHECK(ref >= GNTTAB_NR_RESERVED_ENTRIES);
    auto m = h.dom0().grants().map(g.domid, GrantRef(static_cast<std::uint32_t>(ref)), false);
    REQUIRE(m);
    CHECK(std::memcmp(m->data() + 100, "hello", 5) == 0);
    std::memcpy(m->data() + 200, "world", 5);
    CHECK(g.cmd("read 3 200 5") == "ok world");
    CHECK(g.num("flags " + std::to_string(ref)) == (GTF_permit_access | GTF_reading | GTF_writing));
    REQUIRE(m->reset());
    CHECK(g.num("flags " + std::to_string(ref)) == GTF_permit_access);
    CHECK(g.cmd("end " + std::to_string(ref)) == "ok");
    CHECK(g.num("flags " + std::to_string(ref)) == 0);
}

TEST_CASE("revoking a mapped grant fails until it is unmapped", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    const long ref = g.num("grant 0 1 1");
    auto m = h.dom0().grants().map(g.domid, GrantRef(static_cast<std::uint32_t>(ref)), true);
    REQUIRE(m);
    CHECK(g.num("flags " + std::to_string(ref)) == (GTF_permit_access | GTF_readonly | GTF_reading));
    CHECK(g.cmd("end " + std::to_string(ref)) ==
          "err hvmin " + std::to_string(static_cast<int>(Errc::grant_in_use)));
    m = GrantMapping{};  // destructor-style unmap
    CHECK(g.cmd("end " + std::to_string(ref)) == "ok");
}

TEST_CASE("map reports Xen's status for every failed check", "[hvmin][grant][hostile]") {
    Harness h;
    Puppet g(h, "granter", {.pages = 8});
    auto& s = h.dom0();
    const auto dom = g.domid.get();
    const long rw = g.num("grant 0 2 0");
    const long ro = g.num("grant 0 2 1");
    const long other = g.num("grant 7 2 0");
    const auto ref = [](long r) { return static_cast<grant_ref_t>(r); };
    SECTION("neither host_map nor device_map") {
        CHECK(map_status(s, dom, ref(rw), 0) == GNTST_bad_gntref);
        CHECK(map_status(s, dom, ref(rw), GNTMAP_readonly) == GNTST_bad_gntref);
    }
    SECTION("unknown and reserved domains") {
        CHECK(map_status(s, 999, ref(rw), GNTMAP_host_map) == GNTST_bad_domain);
        CHECK(map_status(s, DOMID_IO, ref(rw), GNTMAP_host_map) == GNTST_bad_domain);
        CHECK(map_status(s, DOMID_INVALID, ref(rw), GNTMAP_host_map) == GNTST_bad_domain);
        CHECK(map_status(s, DOMID_IDLE, ref(rw), GNTMAP_host_map) == GNTST_bad_domain);
    }
    SECTION("refs beyond the table") {
        const std::uint32_t n = 16 * GRANT_ENTRIES_PER_FRAME;
        CHECK(map_status(s, dom, n, GNTMAP_host_map) == GNTST_bad_gntref);
        CHECK(map_status(s, dom, 0xFFFFFFFFu, GNTMAP_host_map) == GNTST_bad_gntref);
        CHECK(map_status(s, dom, n - 1, GNTMAP_host_map) == GNTST_general_error);  // in range, invalid
    }
    SECTION("a grant for another domain") {
        CHECK(map_status(s, dom, ref(other), GNTMAP_host_map) == GNTST_general_error);
    }
    SECTION("a writable map of a read-only grant is general_error, a read-only map works") {
        CHECK(map_status(s, dom, ref(ro), GNTMAP_host_map) == GNTST_general_error);
        grant_handle_t hd = 0;
        CHECK(map_status(s, dom, ref(ro), GNTMAP_host_map | GNTMAP_readonly, &hd) == GNTST_okay);
        CHECK(unmap_status(s, hd) == GNTST_okay);
    }
    SECTION("entries of other types and sub-page grants") {
        REQUIRE(g.cmd("rawentry 20 " + std::to_string(GTF_accept_transfer) + " 0 2") == "ok");
        REQUIRE(g.cmd("rawentry 21 " + std::to_string(GTF_permit_access | GTF_sub_page) + " 0 2") == "ok");
        REQUIRE(g.cmd("rawentry 22 " + std::to_string(GTF_transitive) + " 0 2") == "ok");
        CHECK(map_status(s, dom, 20, GNTMAP_host_map) == GNTST_general_error);
        CHECK(map_status(s, dom, 21, GNTMAP_host_map) == GNTST_general_error);
        CHECK(map_status(s, dom, 22, GNTMAP_host_map) == GNTST_general_error);
    }
    SECTION("a frame outside the granter's memory is bad_page and leaves no pin") {
        REQUIRE(g.cmd("rawentry 23 " + std::to_string(GTF_permit_access) + " 0 4000000") == "ok");
        CHECK(map_status(s, dom, 23, GNTMAP_host_map) == GNTST_bad_page);
        CHECK(g.num("flags 23") == GTF_permit_access);
    }
    SECTION("device_map returns the frame's bus address; unmap checks it") {
        grant_handle_t hd = 0;
        gnttab_map_grant_ref op{};
        op.flags = GNTMAP_host_map | GNTMAP_device_map;
        op.ref = ref(rw);
        op.dom = dom;
        REQUIRE(s.grants().map_raw(std::span(&op, 1)));
        REQUIRE(op.status == GNTST_okay);
        hd = op.handle;
        CHECK(op.dev_bus_addr == 2u << 12);
        CHECK(unmap_status(s, hd, 5u << 12) == GNTST_bad_dev_addr);
        CHECK(unmap_status(s, hd, 2u << 12) == GNTST_okay);
    }
    SECTION("unmap of a bad or unused handle") {
        CHECK(unmap_status(s, 12345) == GNTST_bad_handle);
        grant_handle_t hd = 0;
        REQUIRE(map_status(s, dom, ref(rw), GNTMAP_host_map, &hd) == GNTST_okay);
        CHECK(unmap_status(s, hd) == GNTST_okay);
        CHECK(unmap_status(s, hd) == GNTST_bad_handle);
    }
}

TEST_CASE("pins stack and the flags drop only with the last pin", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    const long r = g.num("grant 0 4 0");
    const auto ref = static_cast<grant_ref_t>(r);
    grant_handle_t h1 = 0;
    grant_handle_t h2 = 0;
    REQUIRE(map_status(h.dom0(), g.domid.get(), ref, GNTMAP_host_map | GNTMAP_readonly, &h1) == GNTST_okay);
    CHECK(g.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_reading));
    REQUIRE(map_status(h.dom0(), g.domid.get(), ref, GNTMAP_host_map, &h2) == GNTST_okay);
    CHECK(g.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_reading | GTF_writing));
    CHECK(unmap_status(h.dom0(), h2) == GNTST_okay);
    CHECK(g.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_reading));
    CHECK(unmap_status(h.dom0(), h1) == GNTST_okay);
    CHECK(g.num("flags " + std::to_string(r)) == GTF_permit_access);
}

TEST_CASE("a mapper's pins are released when it dies", "[hvmin][grant]") {
    Harness h;
    Puppet fe(h, "front");
    Puppet be(h, "back", {.trusted = true});
    const long r = fe.num("grant " + std::to_string(be.domid.get()) + " 5 0");
    REQUIRE(be.num("map " + std::to_string(fe.domid.get()) + " " + std::to_string(r) + " 0") == 1);
    CHECK(fe.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_reading | GTF_writing));
    CHECK(fe.cmd("end " + std::to_string(r)).rfind("err", 0) == 0);
    be.cmd("crash");
    // The death is reported (or the domain is already gone) only after its pins were released.
    (void)h.ts->wait_for_death(be.domid, 5000ms);
    CHECK(fe.num("flags " + std::to_string(r)) == GTF_permit_access);
    CHECK(fe.cmd("end " + std::to_string(r)) == "ok");
}

TEST_CASE("a dom0 connection's pins are released when that connection closes", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    const long r = g.num("grant 0 6 0");
    {
        auto c = Services::connect_dom0(h.dir.path());
        REQUIRE(c);
        grant_handle_t hd = 0;
        REQUIRE(map_status(*c, g.domid.get(), static_cast<grant_ref_t>(r), GNTMAP_host_map, &hd) == GNTST_okay);
        CHECK(g.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_reading | GTF_writing));
    }
    // A request on another connection is served after the close was processed only if the
    // close came first; poll the flags (guest-visible) with a bound.
    for (int i = 0; i < 2500 && g.num("flags " + std::to_string(r)) != GTF_permit_access; ++i) {
        std::this_thread::sleep_for(2ms);
    }
    CHECK(g.num("flags " + std::to_string(r)) == GTF_permit_access);
}

TEST_CASE("a granter's death leaves mapped pages valid for the mapper", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    REQUIRE(g.cmd("write 2 0 persist") == "ok");
    const long r = g.num("grant 0 2 0");
    auto m = h.dom0().grants().map(g.domid, GrantRef(static_cast<std::uint32_t>(r)), false);
    REQUIRE(m);
    REQUIRE(h.ts->destroy(g.domid));
    (void)h.ts->wait_for_death(g.domid, 5000ms);
    CHECK(std::memcmp(m->data(), "persist", 7) == 0);
    std::memcpy(m->data(), "stillok", 7);  // no fault: the memfd lives while mapped
    CHECK(m->reset());
}

TEST_CASE("an isolated backend maps only one-page extents and holds no fd of the frontend",
          "[hvmin][grant]") {
    Harness h;
    Puppet fe(h, "front", {.pages = 48});
    Puppet be(h, "back", {.pages = 32});  // not trusted
    const std::string bed = std::to_string(be.domid.get());
    const long ring_frame = fe.num("extent 1");
    CHECK(ring_frame == 49);  // frames 0..47: its memory; 48: its console page
    REQUIRE(fe.cmd("write " + std::to_string(ring_frame) + " 0 ringpage") == "ok");
    const long ring_ref = fe.num("grant " + bed + " " + std::to_string(ring_frame) + " 0");
    const long mem_ref = fe.num("grant " + bed + " 7 0");
    const std::string fed = std::to_string(fe.domid.get());
    CHECK(be.cmd("map " + fed + " " + std::to_string(mem_ref) + " 0") == gntst(GNTST_permission_denied));
    CHECK(fe.num("flags " + std::to_string(mem_ref)) == GTF_permit_access);  // pin undone
    const long id = be.num("map " + fed + " " + std::to_string(ring_ref) + " 0");
    CHECK(be.cmd("mapread " + std::to_string(id) + " 0 8") == "ok ringpage");
    REQUIRE(be.cmd("mapwrite " + std::to_string(id) + " 8 fromback") == "ok");
    CHECK(fe.cmd("read " + std::to_string(ring_frame) + " 8 8") == "ok fromback");
    // No memfd fd at all; the only memfd mappings are its own and the one granted page.
    CHECK(be.cmd("fds") == "ok");
    const auto maps = be.cmd("maps");
    CHECK(maps.find("hvmin-mem:" + std::to_string(48 * 4096)) == std::string::npos);
    CHECK(maps.find("hvmin-mem:" + std::to_string(32 * 4096)) != std::string::npos);
    CHECK(maps.find("hvmin-extent:4096:rw-s") != std::string::npos);
    // A read-only grant reaches it as a read-only mapping of a read-only fd.
    const long ro_frame = fe.num("extent 1");
    const long ro_ref = fe.num("grant " + bed + " " + std::to_string(ro_frame) + " 1");
    CHECK(be.cmd("map " + fed + " " + std::to_string(ro_ref) + " 0") == gntst(GNTST_general_error));
    be.num("map " + fed + " " + std::to_string(ro_ref) + " 1");
    CHECK(be.cmd("maps").find("hvmin-extent:4096:r--s") != std::string::npos);
    CHECK(be.cmd("fds") == "ok");
    // After unmap the page is gone from the backend.
    CHECK(be.cmd("unmap " + std::to_string(id)) == "ok");
    CHECK(be.cmd("maps").find("hvmin-extent:4096:rw-s") == std::string::npos);
}

TEST_CASE("a trusted backend maps any granted frame and follows the pin protocol", "[hvmin][grant]") {
    Harness h;
    Puppet fe(h, "front", {.pages = 48});
    Puppet be(h, "back", {.trusted = true});
    REQUIRE(fe.cmd("write 9 0 mainmem") == "ok");
    const long r = fe.num("grant " + std::to_string(be.domid.get()) + " 9 1");
    const long id = be.num("map " + std::to_string(fe.domid.get()) + " " + std::to_string(r) + " 1");
    CHECK(be.cmd("mapread " + std::to_string(id) + " 0 7") == "ok mainmem");
    CHECK(fe.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_readonly | GTF_reading));
    CHECK(be.cmd("unmap " + std::to_string(id)) == "ok");
    CHECK(fe.num("flags " + std::to_string(r)) == (GTF_permit_access | GTF_readonly));
}

TEST_CASE("grant copy moves bytes and reports Xen's status for every failed check", "[hvmin][grant][hostile]") {
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    // Through the hypercall page (the default) and through the socket: the same results.
    const bool use_page = GENERATE(true, false);
    s.channel().set_use_page(use_page);
    auto local = s.memory().alloc_extent(2);
    REQUIRE(local);
    const std::uint64_t lf = *local;
    std::memcpy(*s.memory().frame(lf), "dom0data", 8);
    REQUIRE(g.cmd("write 3 0 guestdat") == "ok");
    const auto rw = static_cast<grant_ref_t>(g.num("grant 0 3 0"));
    const auto ro = static_cast<grant_ref_t>(g.num("grant 0 3 1"));
    const auto dom = g.domid.get();
    const auto op = make_copy;
    std::vector<gnttab_copy> ops = {
        op(true, rw, dom, 0, false, lf, DOMID_SELF, 100, 8),          // 0 guest → dom0: okay
        op(false, lf, DOMID_SELF, 0, true, rw, dom, 200, 8),          // 1 dom0 → guest: okay
        op(true, ro, dom, 0, false, lf, DOMID_SELF, 300, 8),          // 2 read-only source: okay
        op(false, lf, DOMID_SELF, 0, true, ro, dom, 0, 8),            // 3 read-only dest
        op(false, lf, dom, 0, true, rw, dom, 0, 8),                   // 4 frame side not SELF
        op(true, rw, 999, 0, false, lf, DOMID_SELF, 0, 8),            // 5 unknown domain
        op(true, rw, dom, 4090, false, lf, DOMID_SELF, 0, 8),         // 6 crosses the page
        op(true, rw, dom, 0, false, lf, DOMID_SELF, 4095, 2),         // 7 dest crosses the page
        op(true, 100000, dom, 0, false, lf, DOMID_SELF, 0, 8),        // 8 ref out of range
        op(true, rw, dom, 0, false, 1u << 30, DOMID_SELF, 0, 8),      // 9 no such frame
        op(true, 30, dom, 0, false, lf, DOMID_SELF, 0, 8),            // 10 ungranted entry
        op(true, rw, dom, 0, false, lf, DOMID_SELF, 0, 0),            // 11 len 0
        op(true, rw, DOMID_IO, 0, false, lf, DOMID_SELF, 0, 8),       // 12 reserved domain
        op(false, lf, DOMID_SELF, 0, false, lf + 1, DOMID_SELF, 0, 8),  // 13 local → local
    };
    REQUIRE(s.grants().copy(ops));
    CHECK(ops[0].status == GNTST_okay);
    CHECK(ops[1].status == GNTST_okay);
    CHECK(ops[2].status == GNTST_okay);
    CHECK(ops[3].status == GNTST_general_error);
    CHECK(ops[4].status == GNTST_permission_denied);
    CHECK(ops[5].status == GNTST_bad_domain);
    CHECK(ops[6].status == GNTST_bad_copy_arg);
    CHECK(ops[7].status == GNTST_bad_copy_arg);
    CHECK(ops[8].status == GNTST_bad_gntref);
    CHECK(ops[9].status == GNTST_bad_page);
    CHECK(ops[10].status == GNTST_general_error);
    CHECK(ops[11].status == GNTST_okay);
    CHECK(ops[12].status == GNTST_bad_domain);
    CHECK(ops[13].status == GNTST_okay);
    auto* p = *s.memory().frame(lf);
    CHECK(std::memcmp(p + 100, "guestdat", 8) == 0);
    CHECK(std::memcmp(p + 300, "guestdat", 8) == 0);
    CHECK(std::memcmp(*s.memory().frame(lf + 1), "dom0data", 8) == 0);
    CHECK(g.cmd("read 3 200 8") == "ok dom0data");
    // Copies hold no pin once done.
    CHECK(g.num("flags " + std::to_string(rw)) == GTF_permit_access);
    CHECK(g.num("flags " + std::to_string(ro)) == (GTF_permit_access | GTF_readonly));
    CHECK((s.channel().page() != nullptr) == use_page);
}

TEST_CASE("the copy reply carries one int16 status per op and nothing else", "[hvmin][grant]") {
    Harness h;
    auto& s = h.dom0();
    auto local = s.memory().alloc_extent(2);
    REQUIRE(local);
    const std::uint64_t lf = *local;
    std::memcpy(*s.memory().frame(lf), "abcdefgh", 8);
    const std::vector<gnttab_copy> ops = {
        make_copy(false, lf, DOMID_SELF, 0, false, lf + 1, DOMID_SELF, 0, 8),     // okay
        make_copy(false, lf, DOMID_SELF, 4090, false, lf + 1, DOMID_SELF, 0, 8),  // bad_copy_arg
        make_copy(true, 100000, DOMID_SELF, 0, false, lf, DOMID_SELF, 0, 8),      // bad_gntref
    };
    wire::Header hd{wire::kMagic, static_cast<std::uint16_t>(wire::Op::gnttab_copy), 0,
                    static_cast<std::uint32_t>(ops.size()), 41};
    std::vector<std::byte> d(sizeof hd + ops.size() * sizeof(gnttab_copy));
    std::memcpy(d.data(), &hd, sizeof hd);
    std::memcpy(d.data() + sizeof hd, ops.data(), ops.size() * sizeof(gnttab_copy));
    auto r = s.channel().call_raw(d, 5000);
    REQUIRE(r);
    CHECK(r->hdr.rc == 0);
    CHECK(r->hdr.seq == 41);
    REQUIRE(r->hdr.count == ops.size());
    REQUIRE(r->body.size() == ops.size() * sizeof(wire::CopyStatus));
    wire::CopyStatus st[3];
    std::memcpy(st, r->body.data(), sizeof st);
    CHECK(st[0] == GNTST_okay);
    CHECK(st[1] == GNTST_bad_copy_arg);
    CHECK(st[2] == GNTST_bad_gntref);
    CHECK(std::memcmp(*s.memory().frame(lf + 1), "abcdefgh", 8) == 0);
    // An empty batch: an empty reply.
    hd.count = 0;
    std::memcpy(d.data(), &hd, sizeof hd);
    auto e = s.channel().call_raw(std::span(d).first(sizeof hd), 5000);
    REQUIRE(e);
    CHECK(e->hdr.rc == 0);
    CHECK(e->hdr.count == 0);
    CHECK(e->body.empty());
}

TEST_CASE("batched maps report per-element status and map what succeeded", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    const auto a = static_cast<std::uint32_t>(g.num("grant 0 1 0"));
    const auto b = static_cast<std::uint32_t>(g.num("grant 0 2 0"));
    std::vector<MapRequest> reqs = {{g.domid, GrantRef(a), false},
                                    {g.domid, GrantRef(99999), false},
                                    {g.domid, GrantRef(b), true}};
    auto v = h.dom0().grants().map_batch(reqs);
    REQUIRE(v);
    REQUIRE(v->size() == 3);
    CHECK((*v)[0]);
    CHECK((*v)[1].error() == gntst_error(GNTST_bad_gntref));
    CHECK((*v)[2]);
    CHECK(g.num("flags " + std::to_string(b)) == (GTF_permit_access | GTF_reading));
    v->clear();
    CHECK(g.num("flags " + std::to_string(a)) == GTF_permit_access);
    CHECK(g.num("flags " + std::to_string(b)) == GTF_permit_access);
}

TEST_CASE("dom0 registers sealed memfd extents as its own frames", "[hvmin][grant][hostile]") {
    Harness h;
    auto& mem = h.dom0().memory();
    UniqueFd fd(::memfd_create("buf", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    REQUIRE(::ftruncate(fd.get(), 4 * 4096) == 0);
    UniqueFd unsealed(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    CHECK(mem.register_extent(std::move(unsealed), 4).error() == std::errc::invalid_argument);
    REQUIRE(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    UniqueFd wrong(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    CHECK(mem.register_extent(std::move(wrong), 3).error() == std::errc::invalid_argument);
    auto f = mem.register_extent(std::move(fd), 4);
    REQUIRE(f);
    REQUIRE(mem.frame(*f + 3));
    CHECK_FALSE(mem.frame(*f + 4));
    Puppet g(h, "guest");
    CHECK(g.cmd("extent 0").rfind("err system " + std::to_string(EINVAL), 0) == 0);
}

TEST_CASE("query_size and setup_table report the table and reject other domains", "[hvmin][grant][hostile]") {
    Harness h;
    Puppet g(h, "guest");
    auto q = [&](domid_t dom) {
        gnttab_query_size op{};
        op.dom = dom;
        auto r = h.dom0().channel().call(wire::Op::gnttab_query_size, 1, std::as_bytes(std::span(&op, 1)));
        REQUIRE(r);
        REQUIRE(r->body.size() == sizeof op);
        std::memcpy(&op, r->body.data(), sizeof op);
        return op;
    };
    auto self = q(DOMID_SELF);
    CHECK(self.status == GNTST_okay);
    CHECK(self.nr_frames == 64);  // dom0: the maximum, shared in slices by its connections
    auto other = q(g.domid.get());
    CHECK(other.status == GNTST_okay);
    CHECK(other.nr_frames == 16);
    CHECK(q(999).status == GNTST_bad_domain);
    CHECK(q(DOMID_IO).status == GNTST_bad_domain);
    auto setup = [&](domid_t dom, std::uint32_t frames) {
        gnttab_setup_table op{};
        op.dom = dom;
        op.nr_frames = frames;
        auto r = h.dom0().channel().call(wire::Op::gnttab_setup_table, 1, std::as_bytes(std::span(&op, 1)));
        REQUIRE(r);
        std::memcpy(&op, r->body.data(), sizeof op);
        return op.status;
    };
    CHECK(setup(DOMID_SELF, 64) == GNTST_okay);
    CHECK(setup(DOMID_SELF, 65) == GNTST_general_error);
    CHECK(setup(g.domid.get(), 1) == GNTST_permission_denied);
}

TEST_CASE("dom0 connections grant from disjoint slices and their grants end with them", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "guest", {.trusted = true});
    auto a = Services::connect_dom0(h.dir.path());
    auto b = Services::connect_dom0(h.dir.path());
    REQUIRE(a);
    REQUIRE(b);
    auto fa = a->memory().alloc_extent(1);
    auto fb = b->memory().alloc_extent(1);
    REQUIRE(fa);
    REQUIRE(fb);
    std::memcpy(*a->memory().frame(*fa), "from-a", 6);
    std::memcpy(*b->memory().frame(*fb), "from-b", 6);
    auto ra = a->grants().grant_access(g.domid, *fa, true);
    auto rb = b->grants().grant_access(g.domid, *fb, true);
    REQUIRE(ra);
    REQUIRE(rb);
    CHECK(ra->get() != rb->get());
    CHECK(ra->get() >= GNTTAB_NR_RESERVED_ENTRIES);
    const long ma = g.num("map 0 " + std::to_string(ra->get()) + " 1");
    const long mb = g.num("map 0 " + std::to_string(rb->get()) + " 1");
    CHECK(g.cmd("mapread " + std::to_string(ma) + " 0 6") == "ok from-a");
    CHECK(g.cmd("mapread " + std::to_string(mb) + " 0 6") == "ok from-b");
    CHECK(g.cmd("unmap " + std::to_string(ma)) == "ok");
    const auto ref_a = ra->get();
    { const Services gone = std::move(*a); }  // closes connection a: its grant ends
    // The next map is served after the close only if hv-min saw it first: bounded poll.
    std::string r;
    for (int i = 0; i < 2500; ++i) {
        r = g.cmd("map 0 " + std::to_string(ref_a) + " 1");
        if (r.rfind("err", 0) == 0) {
            break;
        }
        g.cmd("unmap " + std::to_string(std::stol(words(r)[1])));
        std::this_thread::sleep_for(2ms);
    }
    CHECK(r == "err gntst " + std::to_string(GNTST_general_error));
    CHECK(g.cmd("mapread " + std::to_string(mb) + " 0 6") == "ok from-b");
}

TEST_CASE("pin counts and the maptrack are bounded", "[hvmin][grant][hostile]") {
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    const auto a = static_cast<grant_ref_t>(g.num("grant 0 1 1"));
    const auto b = static_cast<grant_ref_t>(g.num("grant 0 2 1"));
    const auto c = static_cast<grant_ref_t>(g.num("grant 0 3 1"));
    std::vector<grant_handle_t> handles;
    auto map_n = [&](grant_ref_t ref, std::size_t n) {
        std::vector<gnttab_map_grant_ref> ops(n);
        for (auto& op : ops) {
            op = gnttab_map_grant_ref{};
            op.flags = GNTMAP_host_map | GNTMAP_readonly;
            op.ref = ref;
            op.dom = g.domid.get();
        }
        REQUIRE(s.grants().map_raw(ops));
        std::vector<std::int16_t> st;
        for (const auto& op : ops) {
            st.push_back(op.status);
            if (op.status == GNTST_okay) {
                handles.push_back(op.handle);
            }
        }
        return st;
    };
    // 65535 pins on one entry: the next one overflows the pin count.
    for (int i = 0; i < 63; ++i) {
        const auto st = map_n(a, 1024);
        REQUIRE(std::count(st.begin(), st.end(), GNTST_okay) == 1024);
    }
    auto st = map_n(a, 1024);
    CHECK(std::count(st.begin(), st.end(), GNTST_okay) == 1023);
    CHECK(st.back() == GNTST_general_error);
    // The maptrack holds 65536 mappings: one more fits, then no_space.
    CHECK(map_n(b, 1)[0] == GNTST_okay);
    CHECK(map_n(c, 1)[0] == GNTST_no_space);
    std::vector<gnttab_unmap_grant_ref> un(handles.size());
    for (std::size_t i = 0; i < handles.size(); ++i) {
        un[i] = gnttab_unmap_grant_ref{};
        un[i].handle = handles[i];
    }
    for (std::size_t off = 0; off < un.size(); off += 1024) {
        const auto n = std::min<std::size_t>(1024, un.size() - off);
        REQUIRE(s.grants().unmap_raw(std::span(un).subspan(off, n)));
    }
    CHECK(std::all_of(un.begin(), un.end(), [](const auto& u) { return u.status == GNTST_okay; }));
    CHECK(g.num("flags " + std::to_string(a)) == (GTF_permit_access | GTF_readonly));
    CHECK(map_n(c, 1)[0] == GNTST_okay);
}

TEST_CASE("an isolated backend's batch beyond the fd limit gets eagain for the rest", "[hvmin][grant][hostile]") {
    Harness h;
    Puppet fe(h, "front");
    Puppet be(h, "back");
    const std::string bed = std::to_string(be.domid.get());
    long first_ref = -1;
    for (unsigned i = 0; i < wire::kMaxFds + 2; ++i) {
        const long f = fe.num("extent 1");
        const long r = fe.num("grant " + bed + " " + std::to_string(f) + " 0");
        if (first_ref < 0) {
            first_ref = r;
        }
        REQUIRE(r == first_ref + static_cast<long>(i));
    }
    const auto w = words(be.cmd("mapmany " + std::to_string(fe.domid.get()) + " " +
                                std::to_string(first_ref) + " " + std::to_string(wire::kMaxFds + 2)));
    REQUIRE(w.size() >= 2);
    CHECK(w[1] == std::to_string(wire::kMaxFds));
    CHECK(be.cmd("fds") == "ok");
    CHECK(fe.num("flags " + std::to_string(first_ref + wire::kMaxFds)) == GTF_permit_access);
}

TEST_CASE("unmap_batch releases many mappings in one call", "[hvmin][grant]") {
    Harness h;
    Puppet g(h, "granter");
    std::vector<MapRequest> reqs;
    std::vector<long> refs;
    for (int i = 0; i < 5; ++i) {
        refs.push_back(g.num("grant 0 " + std::to_string(i + 1) + " 0"));
        reqs.push_back({g.domid, GrantRef(static_cast<std::uint32_t>(refs.back())), false});
    }
    auto v = h.dom0().grants().map_batch(reqs);
    REQUIRE(v);
    std::vector<GrantMapping> maps;
    for (auto& m : *v) {
        REQUIRE(m);
        maps.push_back(std::move(*m));
    }
    const auto before = h.core->requests_served();
    REQUIRE(h.dom0().grants().unmap_batch(maps));
    CHECK(h.core->requests_served() == before + 1);
    for (const auto& m : maps) {
        CHECK_FALSE(m.valid());
    }
    for (long r : refs) {
        CHECK(g.num("flags " + std::to_string(r)) == GTF_permit_access);
    }
    CHECK(h.dom0().grants().unmap_batch(maps));  // already empty: nothing to do
}

TEST_CASE("a batch of copies has the effect of its ops run one by one", "[hvmin][grant]") {
    // hv-min copies the ops of a batch that continue each other's bytes as one memmove, and
    // holds the batch's grants until its copies are done: neither may change what the guest
    // and dom0 see against Xen's op-by-op loop.
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    s.channel().set_use_page(GENERATE(true, false));  // hypercall page, socket
    const auto dom = g.domid.get();
    auto local = s.memory().alloc_extent(4);
    REQUIRE(local);
    const std::uint64_t lf = *local;
    std::vector<grant_ref_t> refs;
    for (unsigned k = 0; k < 4; ++k) {  // guest frames 10..13, first byte 'A'+k, last '.'
        const std::uint64_t f = 10 + k;
        REQUIRE(g.cmd("write " + std::to_string(f) + " 0 " + std::string(1, char('A' + k))) == "ok");
        REQUIRE(g.cmd("write " + std::to_string(f) + " 4095 .") == "ok");
        refs.push_back(static_cast<grant_ref_t>(g.num("grant 0 " + std::to_string(f) + " 1")));
    }
    auto page = [&](std::uint64_t f) { return *s.memory().frame(f); };
    // Into dom0's own frame `dst`, from a grant ref or from dom0's frame `src`.
    auto copy_op = [](bool src_gref, std::uint64_t src, domid_t sdom, std::uint64_t dst,
                      std::uint16_t len) {
        return make_copy(src_gref, src, sdom, 0, false, dst, DOMID_SELF, 0, len);
    };

    SECTION("contiguous granted pages into contiguous frames, around a failed op") {
        for (unsigned k = 0; k < 4; ++k) {
            std::memset(page(lf + k), 0, 4096);
        }
        std::vector<gnttab_copy> ops = {
            copy_op(true, refs[0], dom, lf + 0, 4096),
            copy_op(true, refs[1], dom, lf + 1, 4096),
            copy_op(true, 5000, dom, lf + 2, 4096),  // no such ref: frame lf+2 stays zero
            copy_op(true, refs[3], dom, lf + 3, 4096),
        };
        REQUIRE(s.grants().copy(ops));
        CHECK(ops[0].status == GNTST_okay);
        CHECK(ops[1].status == GNTST_okay);
        CHECK(ops[2].status == GNTST_general_error);
        CHECK(ops[3].status == GNTST_okay);
        CHECK(static_cast<char>(page(lf)[0]) == 'A');
        CHECK(static_cast<char>(page(lf)[4095]) == '.');
        CHECK(static_cast<char>(page(lf + 1)[0]) == 'B');
        CHECK(page(lf + 2)[0] == std::byte{0});
        CHECK(page(lf + 2)[4095] == std::byte{0});
        CHECK(static_cast<char>(page(lf + 3)[0]) == 'D');
    }
    SECTION("ops whose bytes continue each other but overlap run in order") {
        // lf → lf+1, then lf+1 → lf+2: one by one, lf+2 ends as lf was (a single memmove of
        // both would give it lf+1's old bytes instead).
        for (unsigned k = 0; k < 3; ++k) {
            std::memset(page(lf + k), 'x' + static_cast<int>(k), 4096);
        }
        std::vector<gnttab_copy> ops = {
            copy_op(false, lf, DOMID_SELF, lf + 1, 4096),
            copy_op(false, lf + 1, DOMID_SELF, lf + 2, 4096),
        };
        REQUIRE(s.grants().copy(ops));
        CHECK(ops[0].status == GNTST_okay);
        CHECK(ops[1].status == GNTST_okay);
        CHECK(static_cast<char>(page(lf + 1)[0]) == 'x');
        CHECK(static_cast<char>(page(lf + 2)[0]) == 'x');
        CHECK(static_cast<char>(page(lf + 2)[4095]) == 'x');
    }
    SECTION("a ref used twice in a batch, and a mapped ref, keep the flag protocol") {
        const auto rw = static_cast<grant_ref_t>(g.num("grant 0 14 0"));
        grant_handle_t mh = 0;
        REQUIRE(map_status(s, dom, refs[2], GNTMAP_host_map | GNTMAP_readonly, &mh) == GNTST_okay);
        std::memcpy(page(lf), "batched!", 8);
        std::vector<gnttab_copy> ops = {
            copy_op(true, rw, dom, lf + 1, 8),   // rw as a read-only source
            make_copy(false, lf, DOMID_SELF, 0, true, rw, dom, 0, 8),  // then as a writable dest
            copy_op(true, refs[2], dom, lf + 2, 1),  // a ref dom0 has mapped
        };
        REQUIRE(s.grants().copy(ops));
        CHECK(ops[0].status == GNTST_okay);
        CHECK(ops[1].status == GNTST_okay);
        CHECK(ops[2].status == GNTST_okay);
        CHECK(g.cmd("read 14 0 8") == "ok batched!");
        CHECK(static_cast<char>(page(lf + 2)[0]) == 'C');
        // The copies' claims are gone; the mapping's pin is not.
        CHECK(g.num("flags " + std::to_string(rw)) == GTF_permit_access);
        CHECK(g.num("flags " + std::to_string(refs[2])) ==
              (GTF_permit_access | GTF_readonly | GTF_reading));
        CHECK(unmap_status(s, mh) == GNTST_okay);
        CHECK(g.num("flags " + std::to_string(refs[2])) == (GTF_permit_access | GTF_readonly));
        CHECK(g.cmd("end " + std::to_string(rw)) == "ok");
    }
}

TEST_CASE("copies of one granted page claim it once and each bad op among them fails alone",
          "[hvmin][grant][hostile]") {
    // hv-min takes a source (or destination) grant once for a run of ops naming the same entry,
    // as Xen's op loop keeps its buffers; an op in the middle of the run that fails any check
    // gets its own status and neither breaks the run nor leaves a claim behind.
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    s.channel().set_use_page(GENERATE(true, false));  // hypercall page, socket
    const auto dom = g.domid.get();
    auto local = s.memory().alloc_extent(2);
    REQUIRE(local);
    const std::uint64_t lf = *local;
    auto* page = *s.memory().frame(lf);
    std::memset(page, 0, 4096);
    std::memcpy(*s.memory().frame(lf + 1), "0123456789abcdef", 16);
    REQUIRE(g.cmd("write 20 0 ABCDEFGHIJKLMNOPQRSTUVWX") == "ok");
    const auto rw = static_cast<grant_ref_t>(g.num("grant 0 20 0"));
    const auto ro = static_cast<grant_ref_t>(g.num("grant 0 21 1"));
    const auto op = make_copy;
    std::vector<gnttab_copy> ops = {
        op(true, rw, dom, 0, false, lf, DOMID_SELF, 0, 4),         // 0 claims rw (source)
        op(true, rw, dom, 4, false, lf, DOMID_SELF, 4, 4),         // 1 on 0's claim
        op(true, 100000, dom, 0, false, lf, DOMID_SELF, 8, 4),     // 2 bad ref
        op(true, rw, 999, 8, false, lf, DOMID_SELF, 8, 4),         // 3 foreign (unknown) dom
        op(true, rw, dom, 4090, false, lf, DOMID_SELF, 8, 8),      // 4 crosses the source page
        op(true, rw, dom, 8, false, lf, DOMID_SELF, 4094, 4),      // 5 crosses the dest page
        op(false, lf + 1, DOMID_SELF, 0, true, ro, dom, 0, 4),     // 6 read-only dest
        op(true, 30, dom, 0, false, lf, DOMID_SELF, 8, 4),         // 7 ungranted entry
        op(true, rw, dom, 8, false, lf, DOMID_SELF, 8, 4),         // 8 rw again: okay
        op(false, lf + 1, DOMID_SELF, 0, true, rw, dom, 100, 4),   // 9 claims rw (dest)
        op(false, lf + 1, DOMID_SELF, 4, true, rw, dom, 104, 4),   // 10 on 9's claim
        op(false, lf + 1, DOMID_SELF, 8, true, ro, dom, 108, 4),   // 11 read-only dest again
        op(false, lf + 1, DOMID_SELF, 8, true, rw, dom, 108, 4),   // 12 rw as dest: okay
        op(true, rw, dom, 12, false, lf, DOMID_SELF, 12, 4),       // 13 rw as source: okay
    };
    REQUIRE(s.grants().copy(ops));
    const std::vector<std::int16_t> want = {
        GNTST_okay,         GNTST_okay,         GNTST_bad_gntref,    GNTST_bad_domain,
        GNTST_bad_copy_arg, GNTST_bad_copy_arg, GNTST_general_error, GNTST_general_error,
        GNTST_okay,         GNTST_okay,         GNTST_okay,          GNTST_general_error,
        GNTST_okay,         GNTST_okay,
    };
    for (std::size_t i = 0; i < ops.size(); ++i) {
        INFO("op " << i);
        CHECK(ops[i].status == want[i]);
    }
    CHECK(std::memcmp(page, "ABCDEFGHIJKLMNOP", 16) == 0);
    CHECK(std::all_of(page + 16, page + 4096, [](std::byte b) { return b == std::byte{0}; }));
    CHECK(g.cmd("read 20 100 12") == "ok 0123456789ab");
    CHECK(g.cmd("read 21 0 4") == "ok " + std::string(4, '\0'));
    // Every claim of the batch is gone: the granter can end both grants.
    CHECK(g.num("flags " + std::to_string(rw)) == GTF_permit_access);
    CHECK(g.num("flags " + std::to_string(ro)) == (GTF_permit_access | GTF_readonly));
    CHECK(g.cmd("end " + std::to_string(rw)) == "ok");
    CHECK(g.cmd("end " + std::to_string(ro)) == "ok");
    // A run on an entry the granter has ended fails op by op, with nothing claimed.
    std::vector<gnttab_copy> late = {op(true, rw, dom, 0, false, lf, DOMID_SELF, 0, 4),
                                     op(true, rw, dom, 4, false, lf, DOMID_SELF, 4, 4)};
    REQUIRE(s.grants().copy(late));
    CHECK(late[0].status == GNTST_general_error);
    CHECK(late[1].status == GNTST_general_error);
    CHECK(g.num("flags " + std::to_string(rw)) == 0);
}

TEST_CASE("a grant revoked while runs of copies use it: each batch fails or completes as "
          "Xen's op loop would", "[hvmin][grant][hostile]") {
    // dom0 copies batches of 16 ops out of one granted page while the granter keeps trying to
    // end the grant. end_access wins only between claims; in a batch no op may succeed after
    // one that found the grant gone, every op that succeeded copied the page's bytes, and
    // once ended the grant stays ended and holds no claim.
    Harness h;
    Puppet g(h, "granter");
    auto& s = h.dom0();
    s.channel().set_use_page(GENERATE(true, false));
    const auto dom = g.domid.get();
    auto local = s.memory().alloc_extent(1);
    REQUIRE(local);
    const std::uint64_t lf = *local;
    auto* page = *s.memory().frame(lf);
    REQUIRE(g.cmd("write 22 0 abcdefghijklmnop") == "ok");
    const auto ref = static_cast<grant_ref_t>(g.num("grant 0 22 1"));

    std::atomic<bool> stop{false};
    std::atomic<bool> ended{false};
    std::atomic<bool> copier_done{false};
    bool call_failed = false, okay_after_fail = false, bad_bytes = false, bad_status = false;
    std::atomic<unsigned> batches{0};
    unsigned batches_after_end = 0, failed_after_end = 0;
    auto copy_batches = [&] {
        while (!stop.load()) {
            const bool after_end = ended.load();
            std::memset(page, 0, 16);
            std::vector<gnttab_copy> ops;
            for (std::uint16_t k = 0; k < 16; ++k) {
                ops.push_back(make_copy(true, ref, dom, k, false, lf, DOMID_SELF, k, 1));
            }
            if (!s.grants().copy(ops)) {
                call_failed = true;
                return;
            }
            bool failed = false;
            for (std::uint16_t k = 0; k < 16; ++k) {
                if (ops[k].status == GNTST_okay) {
                    okay_after_fail = okay_after_fail || failed;
                    bad_bytes = bad_bytes || static_cast<char>(page[k]) != 'a' + k;
                } else if (ops[k].status == GNTST_general_error) {
                    failed = true;
                    failed_after_end += after_end ? 1 : 0;
                } else {
                    bad_status = true;
                }
            }
            ++batches;
            batches_after_end += after_end ? 1 : 0;
            if (batches_after_end >= 3) {
                return;
            }
        }
    };
    std::thread copier([&] {
        copy_batches();
        copier_done.store(true);
    });
    while (batches.load() < 20 && !copier_done.load()) {
        std::this_thread::yield();  // some batches before the granter starts ending the grant
    }
    std::string r;
    for (int tries = 0; tries < 200000 && r != "ok"; ++tries) {
        r = g.cmd("end " + std::to_string(ref));
        if (r.empty()) {
            break;  // the granter died: reported below
        }
    }
    // The copier runs its last batches against the ended grant, then stops by itself.
    ended.store(true);
    if (r != "ok") {
        stop.store(true);
    }
    copier.join();
    REQUIRE(r == "ok");
    CHECK_FALSE(call_failed);
    CHECK_FALSE(bad_status);
    CHECK_FALSE(okay_after_fail);
    CHECK_FALSE(bad_bytes);
    CHECK(batches > batches_after_end);
    CHECK(failed_after_end == 16 * batches_after_end);
    CHECK(g.num("flags " + std::to_string(ref)) == 0);
}
