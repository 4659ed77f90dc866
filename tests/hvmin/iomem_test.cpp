// I/O-memory grants (PCI BARs): a backend grants an fd of one BAR to one frontend domain,
// which maps it with at most the granted access; revocation is verified over every process of
// the frontend domain, and a domain that kept the BAR is destroyed.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "iomem.hpp"

using namespace hv;
using namespace hv::hvmin;
using namespace hv::hvmin::test;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kBar = 1u << 20;

UniqueFd bar_memfd(std::uint64_t size = kBar) {
    UniqueFd fd(::memfd_create("test-bar", MFD_CLOEXEC));
    REQUIRE(fd);
    REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(size)) == 0);
    return fd;
}

std::string sys_err(int e) { return "err system " + std::to_string(e); }

CoreConfig short_grace() {
    CoreConfig c;
    c.iomem_revoke_grace_ms = 300;
    return c;
}

bool alive(Harness& h, DomId d) {
    auto l = h.ts->list();
    REQUIRE(l);
    for (const auto& s : *l) {
        if (s.domid == d) {
            return true;
        }
    }
    return false;
}

std::string iomap(Puppet& p, DomId granter, std::uint32_t handle) {
    return p.cmd("iomap " + std::to_string(granter.get()) + " " + std::to_string(handle));
}

}  // namespace

TEST_CASE("iomem: the frontend maps the BAR and writes on either side are seen by the other",
          "[hvmin][iomem]") {
    Harness h;
    Puppet g(h, "fe");
    UniqueFd bar = bar_memfd();
    auto handle = h.dom0().iomem().grant(bar.get(), kBar, g.domid, false);
    REQUIRE(handle);
    const auto w = words(iomap(g, DomId(0), *handle));
    REQUIRE(w.size() == 4);
    CHECK(w[0] == "ok");
    CHECK(w[2] == std::to_string(kBar));
    CHECK(w[3] == "1");
    const std::string id = w[1];
    REQUIRE(g.cmd("iowrite " + id + " 65536 pattern-from-guest") == "ok");
    char buf[18] = {};
    REQUIRE(::pread(bar.get(), buf, sizeof buf, 65536) == sizeof buf);
    CHECK(std::string(buf, sizeof buf) == "pattern-from-guest");
    REQUIRE(::pwrite(bar.get(), "from-backend", 12, kBar - 12) == 12);
    CHECK(g.cmd("ioread " + id + " " + std::to_string(kBar - 12) + " 12") == "ok from-backend");
    REQUIRE(g.cmd("iounmap " + id) == "ok");
    CHECK(h.dom0().iomem().revoke(*handle));
}

TEST_CASE("iomem: a read-only grant is an O_RDONLY fd that cannot be mapped or mprotected writable",
          "[hvmin][iomem]") {
    Harness h;
    Puppet g(h, "fe");
    UniqueFd bar = bar_memfd();
    REQUIRE(::pwrite(bar.get(), "\x55\xaa", 2, 0) == 2);
    auto handle = h.dom0().iomem().grant(bar.get(), kBar, g.domid, true);
    REQUIRE(handle);
    const auto w = words(iomap(g, DomId(0), *handle));
    REQUIRE(w.size() == 4);
    CHECK(w[3] == "0");
    CHECK(g.cmd("ioread " + w[1] + " 0 2") == "ok \x55\xaa");
    CHECK(g.cmd("ioprotect " + w[1]) == sys_err(EACCES));
    const auto fd = words(g.cmd("iofd 0 " + std::to_string(*handle)));
    REQUIRE(fd.size() == 2);
    CHECK(g.cmd("iofdmap " + fd[1] + " 1") == sys_err(EACCES));
    CHECK(g.cmd("iofdmap " + fd[1] + " 0") == "ok");
}

TEST_CASE("iomem: only the named frontend maps and unknown or foreign or revoked handles are errors",
          "[hvmin][iomem]") {
    Harness h;
    Puppet a(h, "a");
    Puppet b(h, "b");
    UniqueFd bar = bar_memfd();
    auto handle = h.dom0().iomem().grant(bar.get(), kBar, a.domid, false);
    REQUIRE(handle);
    CHECK(iomap(b, DomId(0), *handle) == sys_err(EPERM));
    CHECK(iomap(a, DomId(0), *handle + 100) == sys_err(ENOENT));
    CHECK(iomap(a, DomId(0), 0) == sys_err(ENOENT));
    CHECK(iomap(a, b.domid, *handle) == sys_err(ENOENT));  // not b's grant
    // A guest is no backend: it may not grant I/O memory.
    CHECK(a.cmd("iogrant " + std::to_string(b.domid.get())) == sys_err(EPERM));
    REQUIRE(h.dom0().iomem().revoke(*handle));
    CHECK(iomap(a, DomId(0), *handle) == sys_err(ESTALE));
    auto again = h.dom0().iomem().revoke(*handle);
    REQUIRE(!again);
    CHECK(again.error().value() == ESTALE);
    auto never = h.dom0().iomem().revoke(*handle + 100);
    REQUIRE(!never);
    CHECK(never.error().value() == ENOENT);
}

TEST_CASE("iomem: grant arguments are checked", "[hvmin][iomem]") {
    Harness h;
    Puppet g(h, "fe");
    auto& io = h.dom0().iomem();
    UniqueFd bar = bar_memfd(8192);
    auto err_of = [](const Result<std::uint32_t>& r) { return r ? 0 : r.error().value(); };
    CHECK(err_of(io.grant(bar.get(), 0, g.domid, false)) == EINVAL);
    CHECK(err_of(io.grant(bar.get(), 100, g.domid, false)) == EINVAL);
    CHECK(err_of(io.grant(bar.get(), 3 * 4096, g.domid, false)) == EINVAL);  // beyond the file
    CHECK(err_of(io.grant(bar.get(), 4096, DomId(0), false)) == ESRCH);
    CHECK(err_of(io.grant(bar.get(), 4096, DomId(4000), false)) == ESRCH);
    CHECK(err_of(io.grant(bar.get(), 4096, DomId(hv::rings::DOMID_SELF), false)) == ESRCH);
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    UniqueFd r(p[0]);
    UniqueFd wr(p[1]);
    CHECK(err_of(io.grant(r.get(), 4096, g.domid, true)) == EINVAL);  // not a regular file
    // A read/write grant needs an fd with write access; read-only from one is fine.
    UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(bar.get())).c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(ro);
    CHECK(err_of(io.grant(ro.get(), 4096, g.domid, false)) == EACCES);
    CHECK(io.grant(ro.get(), 4096, g.domid, true));
    // Malformed requests (no fd, flags, pad) on the raw channel.
    wire::IomemGrant req{};
    req.size = 4096;
    req.domid = g.domid.get();
    auto raw = h.dom0().channel().call(wire::Op::iomem_grant, 1, as_bytes(std::span(&req, 1)));
    REQUIRE(raw);
    CHECK(raw->hdr.rc == -EINVAL);
    req.flags = 2;
    const int fd = bar.get();
    raw = h.dom0().channel().call(wire::Op::iomem_grant, 1, as_bytes(std::span(&req, 1)),
                                  std::span(&fd, 1));
    REQUIRE(raw);
    CHECK(raw->hdr.rc == -EINVAL);
    req.flags = 0;
    req.handle = 5;  // an out field
    raw = h.dom0().channel().call(wire::Op::iomem_grant, 1, as_bytes(std::span(&req, 1)),
                                  std::span(&fd, 1));
    REQUIRE(raw);
    CHECK(raw->hdr.rc == -EINVAL);
    req.handle = 0;
    req.pad2 = 1;
    raw = h.dom0().channel().call(wire::Op::iomem_grant, 1, as_bytes(std::span(&req, 1)),
                                  std::span(&fd, 1));
    REQUIRE(raw);
    CHECK(raw->hdr.rc == -EINVAL);
    req = wire::IomemGrant{};
    req.handle = 1;
    req.flags = 1;
    raw = h.dom0().channel().call(wire::Op::iomem_map, 1, as_bytes(std::span(&req, 1)));
    REQUIRE(raw);
    CHECK(raw->hdr.rc == -EINVAL);
    raw = h.dom0().channel().call(wire::Op::iomem_revoke, 1, as_bytes(std::span(&req, 1)));
    REQUIRE(raw);
    CHECK(raw->hdr.rc == -EINVAL);
}

TEST_CASE("iomem: one granting domain or dom0 connection holds at most 256 grants", "[hvmin][iomem]") {
    Harness h;
    Puppet g(h, "fe");
    UniqueFd bar = bar_memfd(4096);
    std::vector<std::uint32_t> handles;
    for (std::size_t i = 0; i < iomem::Table::kMaxPerGranter; ++i) {
        auto r = h.dom0().iomem().grant(bar.get(), 4096, g.domid, true);
        REQUIRE(r);
        handles.push_back(*r);
    }
    auto full = h.dom0().iomem().grant(bar.get(), 4096, g.domid, true);
    REQUIRE_FALSE(full);
    CHECK(full.error().value() == ENOSPC);
    // Another dom0 process (connection) has its own allowance.
    auto other = Services::connect_dom0(h.dir.path());
    REQUIRE(other);
    CHECK(other->iomem().grant(bar.get(), 4096, g.domid, true));
    REQUIRE(h.dom0().iomem().revoke(handles.back()));
    CHECK(h.dom0().iomem().grant(bar.get(), 4096, g.domid, true));
}

TEST_CASE("iomem: another dom0 connection may not revoke a grant it did not make",
          "[hvmin][iomem]") {
    Harness h;
    Puppet g(h, "fe");
    UniqueFd bar = bar_memfd();
    auto handle = h.dom0().iomem().grant(bar.get(), kBar, g.domid, false);
    REQUIRE(handle);
    auto other = Services::connect_dom0(h.dir.path());
    REQUIRE(other);
    auto r = other->iomem().revoke(*handle);
    REQUIRE(!r);
    CHECK(r.error().value() == EPERM);
}

TEST_CASE("iomem: a frontend that let go survives the revocation", "[hvmin][iomem]") {
    Harness h(short_grace());
    Puppet g(h, "fe");
    UniqueFd bar = bar_memfd();
    auto handle = h.dom0().iomem().grant(bar.get(), kBar, g.domid, false);
    REQUIRE(handle);
    const auto w = words(iomap(g, DomId(0), *handle));
    REQUIRE(w.size() == 4);
    const auto fd = words(g.cmd("iofd 0 " + std::to_string(*handle)));
    REQUIRE(fd.size() == 2);
    REQUIRE(g.cmd("iounmap " + w[1]) == "ok");
    REQUIRE(g.cmd("ioclose " + fd[1]) == "ok");
    CHECK(g.cmd("maps").find("test-bar") == std::string::npos);
    REQUIRE(h.dom0().iomem().revoke(*handle));
    std::this_thread::sleep_for(600ms);
    CHECK(g.cmd("info").rfind("ok", 0) == 0);
    CHECK(alive(h, g.domid));
}

TEST_CASE("iomem: a domain that keeps a revoked BAR is destroyed while others keep working", "[hvmin][iomem]") {
    Harness h(short_grace());
    Puppet keeper(h, "keeper");
    Puppet other(h, "other");
    UniqueFd bar = bar_memfd();
    UniqueFd bar2 = bar_memfd();
    auto handle = h.dom0().iomem().grant(bar.get(), kBar, keeper.domid, false);
    auto handle2 = h.dom0().iomem().grant(bar2.get(), kBar, other.domid, false);
    REQUIRE(handle);
    REQUIRE(handle2);
    const auto ow = words(iomap(other, DomId(0), *handle2));
    REQUIRE(ow.size() == 4);
    std::string how;
    SECTION("a mapping") {
        how = "mapping";
        REQUIRE(words(iomap(keeper, DomId(0), *handle)).size() == 4);
    }
    SECTION("an fd") {
        how = "fd";
        REQUIRE(words(keeper.cmd("iofd 0 " + std::to_string(*handle))).size() == 2);
    }
    SECTION("a child process's fd (the program itself closed its own)") {
        how = "child";
        const auto fd = words(keeper.cmd("iofd 0 " + std::to_string(*handle)));
        REQUIRE(fd.size() == 2);
        REQUIRE(keeper.cmd("iochild " + fd[1]).rfind("ok ", 0) == 0);
        CHECK(keeper.cmd("fds").find("test-bar") == std::string::npos);
    }
    INFO(how);
    REQUIRE(h.dom0().iomem().revoke(*handle));
    auto death = h.ts->wait_for_death(keeper.domid, 10s);
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::destroyed);
    // The other domain and its own BAR are untouched.
    CHECK(other.cmd("iowrite " + ow[1] + " 0 still-here") == "ok");
    char buf[10] = {};
    REQUIRE(::pread(bar2.get(), buf, sizeof buf, 0) == sizeof buf);
    CHECK(std::string(buf, sizeof buf) == "still-here");
    CHECK(alive(h, other.domid));
}

TEST_CASE("iomem: the backend's connection closing revokes its grants", "[hvmin][iomem]") {
    Harness h(short_grace());
    Puppet coop(h, "coop");
    Puppet keeper(h, "keeper");
    UniqueFd bar = bar_memfd();
    auto conn = Services::connect_dom0(h.dir.path());
    REQUIRE(conn);
    std::optional<Services> be(std::move(*conn));
    auto hc = be->iomem().grant(bar.get(), kBar, coop.domid, false);
    auto hk = be->iomem().grant(bar.get(), kBar, keeper.domid, true);
    REQUIRE(hc);
    REQUIRE(hk);
    const auto wc = words(iomap(coop, DomId(0), *hc));
    REQUIRE(wc.size() == 4);
    REQUIRE(words(iomap(keeper, DomId(0), *hk)).size() == 4);
    REQUIRE(coop.cmd("iounmap " + wc[1]) == "ok");  // a cooperating guest, as on backend Closing
    be.reset();                                     // the backend ends
    auto death = h.ts->wait_for_death(keeper.domid, 10s);
    REQUIRE(death);
    CHECK(death->reason == wire::DeathReason::destroyed);
    CHECK(alive(h, coop.domid));
    CHECK(iomap(coop, DomId(0), *hc) == sys_err(ESTALE));
}

TEST_CASE("iomem: a frontend's death ends the grants made to it", "[hvmin][iomem]") {
    Harness h;
    UniqueFd bar = bar_memfd();
    std::uint32_t handle = 0;
    DomId dom{0};
    {
        Puppet g(h, "fe");
        dom = g.domid;
        auto r = h.dom0().iomem().grant(bar.get(), kBar, g.domid, false);
        REQUIRE(r);
        handle = *r;
        REQUIRE(words(iomap(g, DomId(0), handle)).size() == 4);
        g.cmd("exit 0");
    }
    REQUIRE(h.ts->wait_for_death(dom, 10s));
    auto r = h.dom0().iomem().revoke(handle);
    REQUIRE(!r);
    CHECK(r.error().value() == ESTALE);
}

TEST_CASE("iomem: /proc parsing", "[hvmin][iomem]") {
    using namespace hv::hvmin::iomem;
    CHECK(parse_pids("12\n34\nx\n-5\n56") == std::vector<pid_t>{12, 34, 56});
    CHECK(parse_pids("").empty());
    const FileId id{makedev(0, 1), 4242};
    CHECK(maps_refer("7f00-7f10 rw-s 00000000 00:01 4242 /memfd:bar (deleted)\n", id));
    CHECK_FALSE(maps_refer("7f00-7f10 rw-s 00000000 00:02 4242 /memfd:bar (deleted)\n", id));
    CHECK_FALSE(maps_refer("7f00-7f10 rw-s 00000000 00:01 42421 /x\n", id));
    CHECK_FALSE(maps_refer("7f00-7f10 rw-p 00000000 00:00 0\ngarbage\n", id));
    // This process maps a memfd: found by its identity, and no more once unmapped and closed.
    UniqueFd fd = bar_memfd(4096);
    auto fid = file_id(fd.get());
    REQUIRE(fid);
    void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd.get(), 0);
    REQUIRE(p != MAP_FAILED);
    const pid_t me = ::getpid();
    CHECK(referenced(std::span(&me, 1), *fid));
    UniqueFd keep(::dup(fd.get()));
    fd.reset();
    CHECK(referenced(std::span(&me, 1), *fid));  // the mapping
    ::munmap(p, 4096);
    CHECK(referenced(std::span(&me, 1), *fid));  // the fd
    keep.reset();
    CHECK_FALSE(referenced(std::span(&me, 1), *fid));
}
