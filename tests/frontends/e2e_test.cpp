// libblkfront + hv-guest end to end: the real hv-min core, the real blkback program, hv-guest
// domains; the test talks NBD to hv-guest's sockets and checks the backing files.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <set>

#include "frontends/nbd.hpp"
#include "nbd_client.hpp"
#include "rig.hpp"

using namespace hv;
using namespace hv::test;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kXvda = 51712;  // 202<<8 | 0<<4
constexpr std::uint32_t kXvdb = 51728;  // 202<<8 | 1<<4

NbdClient open_export(Rig& r, const std::string& dev) {
    auto c = NbdClient::connect_unix(r.socket(dev), 15000);
    if (!c) {
        FAIL_CHECK("no NBD socket " << r.socket(dev) << "\n" << r.dump());
    }
    REQUIRE(c);
    REQUIRE(c->greet());
    REQUIRE(c->go(""));
    return std::move(*c);
}

std::vector<std::byte> file_bytes(const std::string& path, std::uint64_t off, std::size_t len) {
    std::vector<std::byte> b(len);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    REQUIRE(::pread(fd.get(), b.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
    return b;
}

std::string fe(DomId g, std::uint32_t devid) { return xenbus::frontend_dir(g, "vbd", devid); }

}  // namespace

TEST_CASE("a disk of hv-guest is an NBD export whose writes reach the image through blkback", "[frontends][e2e]") {
    Rig r({"--max-queues", "2"});
    const auto img = r.make_image("disk.img", 64 << 20);
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", img);
    auto c = open_export(r, "xvda");
    CHECK(c.size == (64U << 20));
    CHECK((c.flags & nbd::NBD_FLAG_SEND_FLUSH) != 0);
    CHECK((c.flags & nbd::NBD_FLAG_READ_ONLY) == 0);

    // Sizes cover one sector, one page, a direct request (11 pages), an indirect request and a
    // request split into several ring requests.
    std::map<std::uint64_t, std::vector<std::byte>> written;
    std::uint64_t off = 0;
    std::uint64_t seed = 1;
    for (std::uint32_t len : {512U, 4096U, 45056U, 131072U, 1U << 20, 3U << 20}) {
        auto data = pattern(len, seed++);
        REQUIRE(c.write(off, data) == 0);
        written[off] = data;
        off += len + 8192;
    }
    for (const auto& [o, d] : written) {
        std::vector<std::byte> back;
        REQUIRE(c.read(o, static_cast<std::uint32_t>(d.size()), back) == 0);
        CHECK(back == d);
    }
    REQUIRE(c.flush() == 0);
    for (const auto& [o, d] : written) {
        CHECK(file_bytes(img, o, d.size()) == d);
    }
    std::vector<std::byte> back;
    CHECK(c.read(64 << 20, 512, back) == static_cast<int>(nbd::NBD_EINVAL));
}

TEST_CASE("hv-guest negotiates multi-page rings, two queues, persistent grants and the protocol", "[frontends][e2e]") {
    Rig r({"--max-queues", "2"});
    const auto img = r.make_image("disk.img", 8 << 20);
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", img);
    auto c = open_export(r, "xvda");
    const auto dir = fe(g, kXvda);
    CHECK(r.xs->read(dir + "/protocol").value_or("") == "x86_64-abi");
    CHECK(r.xs->read(dir + "/feature-persistent").value_or("") == "1");
    CHECK(r.xs->read(dir + "/ring-page-order").value_or("") == "4");
    CHECK(r.xs->read(dir + "/multi-queue-num-queues").value_or("") == "2");
    for (int q = 0; q < 2; ++q) {
        const std::string qd = dir + "/queue-" + std::to_string(q);
        CHECK(r.xs->read(qd + "/event-channel"));
        CHECK(r.xs->read(qd + "/ring-ref0"));
        CHECK(r.xs->read(qd + "/ring-ref15"));
        CHECK_FALSE(r.xs->read(qd + "/ring-ref16"));
    }
    // SPEC: with two queues no ring key is written at the top level (sharp edge 5).
    CHECK_FALSE(r.xs->read(dir + "/ring-ref"));
    CHECK_FALSE(r.xs->read(dir + "/ring-ref0"));
    CHECK_FALSE(r.xs->read(dir + "/event-channel"));
    CHECK(r.xs->read(dir + "/state").value_or("") == "4");
    // Enough concurrent I/O to use both queues.
    for (std::uint64_t i = 0; i < 32; ++i) {
        REQUIRE(c.send_request(nbd::NBD_CMD_WRITE, i, i * 65536, 65536, pattern(65536, i)));
    }
    std::set<std::uint64_t> cookies;
    for (int i = 0; i < 32; ++i) {
        auto rep = c.recv_reply(0);
        REQUIRE(rep);
        CHECK(rep->error == 0);
        cookies.insert(rep->cookie);
    }
    CHECK(cookies.size() == 32);
    for (std::uint64_t i = 0; i < 32; ++i) {
        CHECK(file_bytes(img, i * 65536, 65536) == pattern(65536, i));
    }
}

TEST_CASE("with one queue the ring keys stay at the top level", "[frontends][e2e]") {
    Rig r({"--max-queues", "1"});
    const auto img = r.make_image("disk.img", 4 << 20);
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", img);
    auto c = open_export(r, "xvda");
    const auto dir = fe(g, kXvda);
    CHECK(r.xs->read(dir + "/ring-page-order").value_or("") == "4");
    CHECK(r.xs->read(dir + "/ring-ref0"));
    CHECK(r.xs->read(dir + "/event-channel"));
    CHECK_FALSE(r.xs->read(dir + "/multi-queue-num-queues"));
    auto data = pattern(1 << 20, 5);
    REQUIRE(c.write(0, data) == 0);
    std::vector<std::byte> back;
    REQUIRE(c.read(0, 1 << 20, back) == 0);
    CHECK(back == data);
}

TEST_CASE("trim over NBD discards through blkback and reads back as zeros", "[frontends][e2e]") {
    Rig r({"--max-queues", "1"});
    const auto img = r.make_image("disk.img", 8 << 20);
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", img);
    auto c = open_export(r, "xvda");
    REQUIRE((c.flags & nbd::NBD_FLAG_SEND_TRIM) != 0);
    REQUIRE(c.write(0, pattern(1 << 20, 9)) == 0);
    REQUIRE(c.trim(0, 1 << 20) == 0);
    std::vector<std::byte> back;
    REQUIRE(c.read(0, 1 << 20, back) == 0);
    CHECK(back == std::vector<std::byte>(1 << 20));
}

TEST_CASE("a read-only vbd is exported READ_ONLY and a write gets EPERM", "[frontends][e2e]") {
    Rig r({"--max-queues", "1"});
    const auto img = r.make_image("disk.img", 4 << 20);
    {
        UniqueFd fd(::open(img.c_str(), O_WRONLY | O_CLOEXEC));
        auto d = pattern(4096, 3);
        REQUIRE(::pwrite(fd.get(), d.data(), d.size(), 8192) == 4096);
    }
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", img, "r");
    auto c = open_export(r, "xvda");
    CHECK((c.flags & nbd::NBD_FLAG_READ_ONLY) != 0);
    CHECK(c.write(0, pattern(512, 1)) == static_cast<int>(nbd::NBD_EPERM));
    std::vector<std::byte> back;
    REQUIRE(c.read(8192, 4096, back) == 0);
    CHECK(back == pattern(4096, 3));
}

TEST_CASE("requests in flight when blkback dies are re-issued after its restart and complete exactly once", "[frontends][e2e][reconnect]") {
    Rig r({"--max-queues", "2"});
    const auto img = r.make_image("disk.img", 32 << 20);
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", img);
    auto c = open_export(r, "xvda");
    const std::string fe_state = fe(g, kXvda) + "/state";
    REQUIRE(r.wait_value(fe_state, "4"));

    // Freeze the backend so that what we send stays in the rings, unanswered.
    r.kill_blkback(SIGSTOP);
    constexpr std::uint64_t kWrites = 48;
    constexpr std::uint32_t kLen = 256 * 1024;
    for (std::uint64_t i = 0; i < kWrites; ++i) {
        REQUIRE(c.send_request(nbd::NBD_CMD_WRITE, 1000 + i, i * kLen, kLen, pattern(kLen, 100 + i)));
    }
    r.kill_blkback(SIGKILL);
    // The frontend notices (its event channel reverts to unbound) and starts over.
    REQUIRE(r.wait_value(fe_state, "1"));
    r.start_blkback();
    REQUIRE(r.wait_value(fe_state, "4", 20s));

    std::map<std::uint64_t, int> seen;
    for (std::uint64_t i = 0; i < kWrites; ++i) {
        auto rep = c.recv_reply(0);
        REQUIRE(rep);
        CHECK(rep->error == 0);
        ++seen[rep->cookie];
    }
    CHECK(seen.size() == kWrites);
    for (const auto& [cookie, n] : seen) {
        CHECK(n == 1);
        CHECK(cookie >= 1000);
        CHECK(cookie < 1000 + kWrites);
    }
    for (std::uint64_t i = 0; i < kWrites; ++i) {
        std::vector<std::byte> back;
        REQUIRE(c.read(i * kLen, kLen, back) == 0);
        CHECK(back == pattern(kLen, 100 + i));
    }
}

TEST_CASE("a vbd attached after hv-guest started is exported, its removal unexports it", "[frontends][e2e][hotplug]") {
    Rig r({"--max-queues", "1"});
    const auto a = r.make_image("a.img", 4 << 20);
    const auto b = r.make_image("b.img", 2 << 20);
    const DomId g = r.start_guest("g1");
    r.attach_disk(g, kXvda, "xvda", a);
    auto ca = open_export(r, "xvda");
    r.attach_disk(g, kXvdb, "xvdb", b);
    auto cb = open_export(r, "xvdb");
    CHECK(cb.size == (2U << 20));
    REQUIRE(cb.write(0, pattern(4096, 4)) == 0);

    REQUIRE(xenbus::request_close(*r.xs, DomId(0), "vbd", g, kXvdb));
    REQUIRE(r.wait_value(xenbus::backend_dir(DomId(0), "vbd", g, kXvdb) + "/state", "6"));
    CHECK(r.wait_gone(r.socket("xvdb")));
    REQUIRE(xenbus::remove_device(*r.xs, DomId(0), "vbd", g, kXvdb));
    // The other disk is untouched.
    std::vector<std::byte> back;
    REQUIRE(ca.write(0, pattern(4096, 6)) == 0);
    REQUIRE(ca.read(0, 4096, back) == 0);
    CHECK(back == pattern(4096, 6));
    CHECK(file_bytes(b, 0, 4096) == pattern(4096, 4));
}

TEST_CASE("hv-guest runs its command once the disks are connected, with the socket paths in its environment", "[frontends][e2e]") {
    Rig r({"--max-queues", "1"});
    const auto img = r.make_image("disk.img", 4 << 20);
    const std::string out = (r.dir.path() / "command.out").string();
    const DomId g = r.start_guest(
        "g1", {"--wait-disks", "1"},
        {"/bin/sh", "-c",
         "test -S \"$HV_NBD_XVDA\" && echo \"$HV_NBD_DIR $HV_NBD_XVDA $HV_NBD_URI_XVDA\" > " + out +
             "; exit 7"});
    r.attach_disk(g, kXvda, "xvda", img);
    auto death = r.ts->wait_for_death(g, 20s);
    REQUIRE(death);
    // hv-guest exits with the command's status. Its socket may close first: hv-min then waits
    // (exit grace) and reports the status the program reaped with.
    CHECK(death->reason == hvmin::wire::DeathReason::exited);
    CHECK(death->status == 7);
    std::ifstream f(out);
    std::string dir, sock, uri;
    f >> dir >> sock >> uri;
    CHECK(dir == r.nbd_dir());
    CHECK(sock == r.socket("xvda"));
    CHECK(uri == "nbd+unix:///?socket=" + r.socket("xvda"));
}
