// System test of the guest disk path: the real hv-min daemon (private HV_RUNDIR), the real
// blkback program, an hv-guest domain with a file-backed (sparse) disk — and Debian's fio (nbd
// engine, random writes verified with crc32c) and nbdcopy (copy in and out, compared) working
// on the domain's NBD export. Every wait is bounded.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "guest_system.hpp"

using namespace hv;
using namespace std::chrono_literals;

using hv::test::guest::check_fio_verify;
using hv::test::guest::GuestSystem;

namespace {

void require_fio_tools() {
    test::skip_unless(std::filesystem::exists("/usr/bin/fio"), "needs fio");
    test::skip_unless(std::filesystem::exists("/usr/bin/nbdcopy"), "needs nbdcopy (libnbd-bin)");
}

}  // namespace

TEST_CASE("fio's nbd engine writes randomly to a guest disk and verifies it with crc32c", "[system][guest][root]") {
    require_fio_tools();
    GuestSystem g(32 << 20);
    check_fio_verify(g.uri(), "16m");
}

TEST_CASE("nbdcopy copies a file into a guest disk and back out unchanged", "[system][guest][root]") {
    constexpr std::size_t kSize = 16 << 20;
    require_fio_tools();
    GuestSystem g(kSize);
    const std::string in = (g.dir.path() / "in.bin").string();
    const std::string out = (g.dir.path() / "out.bin").string();
    {
        std::ofstream f(in, std::ios::binary);
        std::uint64_t x = 0x1234567;
        for (std::size_t i = 0; i < kSize / 8; ++i) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.write(reinterpret_cast<const char*>(&x), 8);
        }
    }
    auto c1 = run({"nbdcopy", in, g.uri()}, 60000);
    REQUIRE(c1);
    INFO(c1->output);
    CHECK(c1->exit_code == 0);
    auto c2 = run({"nbdcopy", g.uri(), out}, 60000);
    REQUIRE(c2);
    INFO(c2->output);
    CHECK(c2->exit_code == 0);
    auto s1 = run({"sha256sum", in}, 10000);
    auto s2 = run({"sha256sum", out}, 10000);
    REQUIRE(s1);
    REQUIRE(s2);
    CHECK(s1->output.substr(0, 64) == s2->output.substr(0, 64));
    auto s3 = run({"sha256sum", g.image}, 10000);
    REQUIRE(s3);
    CHECK(s3->output.substr(0, 64) == s1->output.substr(0, 64));
}
