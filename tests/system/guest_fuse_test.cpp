// System tests of hv-guest's FUSE files (--fuse-dir): the real hv-min, blkback and hv-guest;
// ext4 (Debian's mkfs.ext4, a loop device from mount -o loop) on a guest disk's file, checked
// on the backing image with debugfs; odd and concurrent requests against the file through
// /proc/<pid>/root (the file exists only in the domain's mount namespace); and what is left
// when the domain dies with the filesystem still mounted. Every wait is bounded.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "guest_system.hpp"
#include "tools_harness.hpp"

using namespace hv;
using namespace std::chrono_literals;
using hv::test::guest::GuestSystem;
using hv::test::guest::wait_file;

namespace {

void require_tools() {
    for (const char* p : {"/usr/sbin/mkfs.ext4", "/usr/sbin/debugfs", "/usr/sbin/losetup"}) {
        test::skip_unless(std::filesystem::exists(p), "needs e2fsprogs and util-linux");
    }
    test::skip_unless(std::filesystem::exists("/dev/fuse"), "needs /dev/fuse");
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

pid_t domain_pid(GuestSystem& g) {
    auto l = g.ts->list();
    if (l) {
        for (const auto& d : *l) {
            if (d.domid == g.domid) {
                return d.pid;
            }
        }
    }
    return -1;
}

/// A child of the domain's process living in another mount namespace than ours: hv-guest's
/// mount helper (or the command), whose /proc/<pid>/root shows the domain's mounts.
pid_t in_domain_ns(pid_t domain) {
    std::error_code ec;
    const auto ours = std::filesystem::read_symlink("/proc/self/ns/mnt", ec);
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        const std::string stat = slurp(e.path() / "stat");
        const auto close = stat.rfind(')');
        if (close == std::string::npos) {
            continue;
        }
        std::istringstream rest(stat.substr(close + 2));
        char state = 0;
        pid_t ppid = -1;
        rest >> state >> ppid;
        std::error_code ec2;
        if (ppid == domain && std::filesystem::read_symlink(e.path() / "ns/mnt", ec2) != ours && !ec2) {
            return static_cast<pid_t>(std::stol(name));
        }
    }
    return -1;
}

bool mounted_here(const std::string& needle) { return slurp("/proc/self/mountinfo").find(needle) != std::string::npos; }

/// Loop devices whose backing file name contains `needle` (from losetup's listing).
std::string loops_on(const std::string& needle) {
    auto r = run({"losetup", "-a"}, 10000);
    std::string hits;
    if (r) {
        std::istringstream in(r->output);
        for (std::string line; std::getline(in, line);) {
            if (line.find(needle) != std::string::npos) {
                hits += line + "\n";
            }
        }
    }
    return hits;
}

std::string guest_script(const std::filesystem::path& dir, const std::string& body) {
    const auto p = dir / "guest.sh";
    std::ofstream(p) << "set -e\n" << body;
    return p.string();
}

}  // namespace

TEST_CASE("ext4 on a loop device over a guest disk's FUSE file keeps its files on the backing store",
          "[system][guest][fuse][root]") {
    require_tools();
    test::TempDir scratch("hvkit-fuse-sys");
    const std::string d = scratch.str();
    const std::string script = guest_script(scratch.path(), R"(
f=$HV_DISK_XVDA
test -n "$f"
mkfs.ext4 -q -F "$f"
mkdir -p )" + d + R"(/mnt
mount -o loop "$f" )" + d + R"(/mnt
echo "hello through blkfront" >)" + d + R"(/mnt/hello.txt
head -c 6000000 /dev/urandom >)" + d + R"(/mnt/data.bin
cp )" + d + R"(/mnt/data.bin )" + d + R"(/data.ref
sync
umount )" + d + R"(/mnt
echo ok >)" + d + R"(/guest.ok
)");
    GuestSystem g(64 << 20, {"--fuse-dir", d + "/fuse", "--wait-disks", "1", "--", "/bin/sh", script});
    REQUIRE(wait_file(scratch.path() / "guest.ok", 60s));
    // The domain's command is done: hv-guest exits with it and the domain dies.
    REQUIRE(test::tools::eventually([&] { return domain_pid(g) < 0; }, 10s));

    auto hello = run({"debugfs", "-R", "cat /hello.txt", g.image}, 20000);
    REQUIRE(hello);
    CHECK(hello->output.find("hello through blkfront") != std::string::npos);
    const std::string out = d + "/data.out";
    auto dump = run({"debugfs", "-R", "dump /data.bin " + out, g.image}, 20000);
    REQUIRE(dump);
    const std::string ref = slurp(d + "/data.ref");
    CHECK(ref.size() == 6000000);
    CHECK(slurp(out) == ref);
    auto fsck = run({"/usr/sbin/e2fsck", "-fn", g.image}, 30000);
    REQUIRE(fsck);
    INFO(fsck->output);
    CHECK(fsck->exit_code == 0);
    // Nothing of the domain's mounts is visible here or left behind.
    CHECK_FALSE(mounted_here(d));
    CHECK(loops_on(d).empty());
    CHECK_FALSE(std::filesystem::exists(d + "/fuse/xvda"));
}

TEST_CASE("a guest dying with ext4 mounted on its FUSE file leaves no mount or loop device",
          "[system][guest][fuse][root]") {
    require_tools();
    test::TempDir scratch("hvkit-fuse-sys");
    const std::string d = scratch.str();
    const std::string script = guest_script(scratch.path(), R"(
mkfs.ext4 -q -F "$HV_DISK_XVDA"
mkdir -p )" + d + R"(/mnt
mount -o loop "$HV_DISK_XVDA" )" + d + R"(/mnt
echo busy >)" + d + R"(/mnt/f
echo ok >)" + d + R"(/guest.ok
exec sleep 600
)");
    GuestSystem g(32 << 20, {"--fuse-dir", d + "/fuse", "--wait-disks", "1", "--", "/bin/sh", script});
    REQUIRE(wait_file(scratch.path() / "guest.ok", 60s));
    const pid_t pid = domain_pid(g);
    REQUIRE(pid > 0);
    const pid_t inside = in_domain_ns(pid);
    REQUIRE(inside > 0);
    // Both mounts live in the domain's namespace only.
    const std::string theirs = slurp("/proc/" + std::to_string(inside) + "/mountinfo");
    CHECK(theirs.find(d + "/fuse/xvda") != std::string::npos);
    CHECK(theirs.find(d + "/mnt") != std::string::npos);
    CHECK_FALSE(mounted_here(d));
    CHECK_FALSE(loops_on(d).empty());  // the loop device is global while it is in use

    REQUIRE(g.ts->destroy(g.domid));
    CHECK(test::tools::eventually([&] { return !std::filesystem::exists("/proc/" + std::to_string(pid)); }, 10s));
    CHECK(test::tools::eventually([&] { return loops_on(d).empty(); }, 10s));
    CHECK_FALSE(mounted_here(d));
}

TEST_CASE("a guest disk's FUSE file answers reads past the end and unaligned and concurrent requests",
          "[system][guest][fuse][root]") {
    require_tools();
    test::TempDir scratch("hvkit-fuse-sys");
    const std::string d = scratch.str();
    constexpr std::size_t kSize = 8 << 20;
    GuestSystem g(kSize, {"--fuse-dir", d + "/fuse", "--wait-disks", "1", "--", "/bin/sleep", "600"});
    pid_t pid = -1;
    REQUIRE(test::tools::eventually([&] { return (pid = domain_pid(g)) > 0 && in_domain_ns(pid) > 0; }, 10s));
    const std::string file = "/proc/" + std::to_string(in_domain_ns(pid)) + "/root" + d + "/fuse/xvda";
    struct stat st{};
    REQUIRE(test::tools::eventually(
        [&] { return ::stat(file.c_str(), &st) == 0 && static_cast<std::size_t>(st.st_size) == kSize; }, 15s));
    CHECK(S_ISREG(st.st_mode));
    struct stat host{};
    CHECK((::stat((d + "/fuse/xvda").c_str(), &host) != 0 || host.st_size == 0));  // not mounted here

    UniqueFd fd(::open(file.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd.valid());
    std::vector<char> model(kSize);
    std::mt19937_64 rng(42);
    for (auto& c : model) {
        c = static_cast<char>(rng());
    }
    REQUIRE(::pwrite(fd.get(), model.data(), kSize, 0) == static_cast<ssize_t>(kSize));

    SECTION("the end of the disk is the end of the file") {
        std::vector<char> buf(8192);
        CHECK(::pread(fd.get(), buf.data(), 4096, kSize - 100) == 100);
        CHECK(std::memcmp(buf.data(), model.data() + kSize - 100, 100) == 0);
        CHECK(::pread(fd.get(), buf.data(), 4096, kSize) == 0);
        CHECK(::pread(fd.get(), buf.data(), 4096, kSize + (1 << 20)) == 0);
        errno = 0;
        CHECK(::pwrite(fd.get(), buf.data(), 512, kSize) < 0);
        CHECK(errno == EFBIG);
        CHECK(::pwrite(fd.get(), buf.data(), 1000, kSize - 300) == 300);  // short at the end
        std::memcpy(model.data() + kSize - 300, buf.data(), 300);
        CHECK(::ftruncate(fd.get(), kSize / 2) < 0);  // the size is the disk's
        CHECK(::ftruncate(fd.get(), kSize) == 0);
        UniqueFd t(::open(file.c_str(), O_RDWR | O_TRUNC | O_CLOEXEC));
        CHECK_FALSE(t.valid());
        CHECK(::fallocate(fd.get(), 0, 0, kSize * 2) < 0);  // cannot grow either
        CHECK(::fallocate(fd.get(), FALLOC_FL_COLLAPSE_RANGE, 0, 4096) < 0);
    }
    SECTION("unaligned reads and writes, direct and cached, land on exactly their bytes") {
        UniqueFd dfd(::open(file.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
        REQUIRE(dfd.valid());
        std::vector<char> buf(70000);
        for (auto [off, len] : {std::pair<std::size_t, std::size_t>{1, 1}, {511, 2}, {1000, 5000},
                                {4095, 4097}, {12345, 65432}, {kSize - 777, 777}}) {
            for (std::size_t i = 0; i < len; ++i) {
                buf[i] = static_cast<char>(rng());
            }
            const int w = (off & 1) != 0 ? dfd.get() : fd.get();
            REQUIRE(::pwrite(w, buf.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
            std::memcpy(model.data() + off, buf.data(), len);
            std::vector<char> back(len + 20);
            const std::size_t from = off > 10 ? off - 10 : 0;
            const std::size_t n = std::min(len + 20, kSize - from);
            REQUIRE(::pread(dfd.get(), back.data(), n, static_cast<off_t>(from)) == static_cast<ssize_t>(n));
            CHECK(std::memcmp(back.data(), model.data() + from, n) == 0);
        }
    }
    SECTION("concurrent unaligned writers on neighbouring ranges and readers lose nothing") {
        UniqueFd dfd(::open(file.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC));
        REQUIRE(dfd.valid());
        constexpr std::size_t kSpan = 70001;  // neighbours share a sector at every boundary
        constexpr int kThreads = 6;
        std::vector<std::thread> ts;
        std::atomic<int> bad{0};
        for (int t = 0; t < kThreads; ++t) {
            ts.emplace_back([&, t] {
                std::vector<char> b(kSpan);
                std::vector<char> r(kSpan);
                for (int round = 0; round < 8; ++round) {
                    std::memset(b.data(), 'a' + t * 3 + round, kSpan);
                    const off_t off = static_cast<off_t>(t * kSpan + 3);
                    bad += ::pwrite(dfd.get(), b.data(), kSpan, off) != static_cast<ssize_t>(kSpan);
                    bad += ::pread(dfd.get(), r.data(), kSpan, off) != static_cast<ssize_t>(kSpan);
                    bad += std::memcmp(r.data(), b.data(), kSpan) != 0;
                    // a reader elsewhere on the disk at the same time
                    bad += ::pread(dfd.get(), r.data(), 4096, static_cast<off_t>(kSize - 8192)) != 4096;
                }
            });
        }
        for (auto& t : ts) {
            t.join();
        }
        CHECK(bad == 0);
        for (int t = 0; t < kThreads; ++t) {
            std::memset(model.data() + t * kSpan + 3, 'a' + t * 3 + 7, kSpan);
        }
    }
    SECTION("punching a hole reads back zeros, edges included") {
        REQUIRE(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 100000) == 0);
        std::memset(model.data() + 1000, 0, 100000);
        REQUIRE(::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, 300000, 5000) == 0);
        std::memset(model.data() + 300000, 0, 5000);
    }
    // Whatever a section did, the backing image (through blkback) now holds the model.
    REQUIRE(::fsync(fd.get()) == 0);
    const std::string img = slurp(g.image);
    REQUIRE(img.size() == kSize);
    CHECK(std::memcmp(img.data(), model.data(), kSize) == 0);
}
