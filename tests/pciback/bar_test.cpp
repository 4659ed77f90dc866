// PCI BARs mapped into the frontend (design §8): pciback grants each memory BAR of an exported
// device to its frontend through hv-min (bar-<i>-<n> = handle), libpcifront maps it, and a
// detach revokes it — verified by hv-min over the frontend domain's processes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "harness.hpp"

using namespace hv;
using namespace hv::pci;
using namespace hv::pci::test;

namespace {

constexpr std::size_t kBar2Size = 1u << 20;

/// pciback's memfd of an emulated BAR (it runs in this process): the "hvkit-pci-bar" memfds
/// of `size` open here, which must all be one file (hv-min's reopened copies share the inode).
/// `not_ino`: skip a file already retired (its old copy may still be open in hv-min).
UniqueFd backend_bar(std::size_t size, ino_t not_ino = 0) {
    std::optional<ino_t> ino;
    UniqueFd out;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        const auto target = std::filesystem::read_symlink(e.path(), ec).string();
        if (ec || target.rfind("/memfd:hvkit-pci-bar", 0) != 0) {
            continue;
        }
        struct stat st {};
        if (::stat(e.path().c_str(), &st) != 0 || static_cast<std::size_t>(st.st_size) != size ||
            st.st_ino == not_ino) {
            continue;
        }
        if (ino) {
            REQUIRE(*ino == st.st_ino);
            continue;
        }
        ino = st.st_ino;
        out = UniqueFd(::open(e.path().c_str(), O_RDWR | O_CLOEXEC));
    }
    REQUIRE(out);
    return out;
}

ino_t ino_of(int fd) {
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    return st.st_ino;
}

/// Does this process map the file with inode `ino` (any device)?
bool self_maps(ino_t ino) {
    std::ifstream f("/proc/self/maps");
    std::string line;
    while (std::getline(f, line)) {
        unsigned long long i = 0;
        if (std::sscanf(line.c_str(), "%*s %*s %*s %*s %llu", &i) == 1 && i == ino) {
            return true;
        }
    }
    return false;
}

std::uint32_t handle_at(Env& env, DomId fe, unsigned slot, unsigned bar) {
    auto v = env.xs->read(env.bdir(fe) + "/bar-" + std::to_string(slot) + "-" + std::to_string(bar));
    REQUIRE(v);
    return static_cast<std::uint32_t>(std::stoul(*v));
}

}  // namespace

TEST_CASE("a guest writes testdev BAR2 through its mapping and pciback's memfd sees it and the reverse",
          "[pciback][e2e][bar]") {
    Env env;
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    const std::string b = env.bdir(g.domid);
    // BAR0, BAR2 and the ROM are granted; BAR1 (none) and BAR3 (BAR2's upper half) are not.
    for (const char* k : {"/bar-0-0", "/bar-0-2", "/bar-0-6"}) {
        CHECK(env.xs->read(b + k));
    }
    CHECK_FALSE(env.xs->read(b + "/bar-0-1"));
    CHECK_FALSE(env.xs->read(b + "/bar-0-3"));

    auto bar2 = front->map_bar(kDev0, 2);
    REQUIRE(bar2);
    CHECK(bar2->size() == kBar2Size);
    CHECK(bar2->writable());
    UniqueFd mem = backend_bar(kBar2Size);
    std::memcpy(bar2->data() + 0x1000, "guest-pattern", 13);
    char buf[13] = {};
    REQUIRE(::pread(mem.get(), buf, sizeof buf, 0x1000) == sizeof buf);
    CHECK(std::string(buf, sizeof buf) == "guest-pattern");
    REQUIRE(::pwrite(mem.get(), "device-says", 11, kBar2Size - 11) == 11);
    CHECK(std::memcmp(bar2->data() + kBar2Size - 11, "device-says", 11) == 0);

    auto bar0 = front->map_bar(kDev0, 0);
    REQUIRE(bar0);
    CHECK(bar0->size() == 4096);
    // The ROM is granted read-only: the mapping cannot be made writable.
    auto rom = front->map_bar(kDev0, 6);
    REQUIRE(rom);
    CHECK_FALSE(rom->writable());
    CHECK(static_cast<unsigned char>(rom->data()[0]) == 0x55);
    CHECK(static_cast<unsigned char>(rom->data()[1]) == 0xaa);
    CHECK(::mprotect(rom->data(), rom->size(), PROT_READ | PROT_WRITE) != 0);
    CHECK(errno == EACCES);

    auto none = front->map_bar(kDev0, 1);
    REQUIRE_FALSE(none);
    CHECK(none.error() == std::errc::no_such_file_or_directory);
    auto bad = front->map_bar(kDev0, 7);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == std::errc::invalid_argument);
    auto nodev = front->map_bar(pcifront::Address{0, 0, 8}, 2);
    REQUIRE_FALSE(nodev);
    CHECK(nodev.error() == std::errc::no_such_device);
}

TEST_CASE("another domain cannot map a guest's BAR handle and unknown handles fail", "[pciback][e2e][bar]") {
    Env env;
    Guest g(env, "g1");
    Guest other(env, "g2");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    const std::uint32_t h = handle_at(env, g.domid, 0, 2);
    auto stolen = other.svc->iomem().map(DomId(0), h);
    REQUIRE_FALSE(stolen);
    CHECK(stolen.error() == std::errc::operation_not_permitted);
    auto unknown = g.svc->iomem().map(DomId(0), h + 1000);
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error() == std::errc::no_such_file_or_directory);
    CHECK(g.svc->iomem().map(DomId(0), h));
}

TEST_CASE("a detach revokes the BAR of a cooperating guest and the next assignee gets fresh memory",
          "[pciback][e2e][bar]") {
    Env env(emulating({"0001:00:02.0", "0001:00:03.0"}));
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0001:00:02.0", "0001:00:03.0"});
    auto front = g.connect();
    const std::string b = env.bdir(g.domid);
    REQUIRE(env.wait_value(b + "/state", "4"));
    const std::uint32_t h = handle_at(env, g.domid, 0, 2);
    auto bar2 = front->map_bar(kDev0, 2);
    REQUIRE(bar2);
    std::memcpy(bar2->data(), "old-guest", 9);
    ino_t old_ino = 0;
    {
        auto fd = g.svc->iomem().open(DomId(0), h);
        REQUIRE(fd);
        old_ino = ino_of(fd->get());
    }

    env.hotplug_remove(g.domid, 0);
    g.drive(*front, "4");
    CHECK(env.read(b + "/state-0") == "6");
    CHECK_FALSE(bar2->valid());      // libpcifront revoked it before answering Reconfiguring
    CHECK_FALSE(self_maps(old_ino));  // nothing of this guest maps the BAR any more
    CHECK_FALSE(env.xs->read(b + "/bar-0-2"));
    auto stale = g.svc->iomem().map(DomId(0), h);
    REQUIRE_FALSE(stale);
    CHECK(stale.error().value() == ESTALE);
    // After hv-min's grace the guest is still alive and its other device still works.
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    CHECK(front->conf_read(pcifront::Address{0, 0, 8}, 0, 4).value() == 0x00051b36);
    auto bar2b = front->map_bar(pcifront::Address{0, 0, 8}, 2);
    REQUIRE(bar2b);
    bar2b->data()[0] = std::byte{1};

    // The device comes back: fresh memory, none of the old guest's bytes.
    env.hotplug_add(g.domid, "0001:00:02.0");
    g.drive(*front, "4");
    const auto& devs = front->devices();
    REQUIRE(devs.size() == 2);
    const std::string vdev = env.read(b + "/vdev-2");
    REQUIRE(vdev == "0000:00:00.00");
    auto again = front->map_bar(kDev0, 2);
    REQUIRE(again);
    CHECK(std::memcmp(again->data(), "old-guest", 9) != 0);
    CHECK(std::all_of(again->data(), again->data() + 9, [](std::byte x) { return x == std::byte{0}; }));
}

TEST_CASE("a guest process that keeps a BAR after detach is destroyed while another guest keeps working",
          "[pciback][e2e][bar]") {
    Env env(emulating({"0001:00:02.0", "0001:00:03.0"}));
    Guest keeper(env, "keeper");
    Guest other(env, "other");
    env.attach_bus(keeper.domid, {"0001:00:02.0"});
    env.attach_bus(other.domid, {"0001:00:03.0"});
    auto kfront = keeper.connect();
    auto ofront = other.connect();
    const std::uint32_t h = handle_at(env, keeper.domid, 0, 2);
    auto fd = keeper.svc->iomem().open(DomId(0), h);
    REQUIRE(fd);
    SECTION("an fd") { keeper.give_to_domain(fd->get(), 'K'); }
    SECTION("a mapping") { keeper.give_to_domain(fd->get(), 'M'); }
    fd->reset();
    auto obar = ofront->map_bar(kDev0, 2);
    REQUIRE(obar);

    env.hotplug_remove(keeper.domid, 0);
    keeper.drive(*kfront, "4");
    auto death = env.ts->wait_for_death(keeper.domid, std::chrono::seconds(10));
    REQUIRE(death);
    CHECK(death->reason == hvmin::wire::DeathReason::destroyed);
    // The other guest: its device and its BAR work on.
    CHECK(ofront->conf_read(kDev0, 0, 4).value() == 0x00051b36);
    REQUIRE(obar->valid());
    std::memcpy(obar->data() + 64, "still-mine", 10);
    auto again = ofront->map_bar(kDev0, 2);
    REQUIRE(again);
    CHECK(std::memcmp(again->data() + 64, "still-mine", 10) == 0);
}

TEST_CASE("a host device's memory BAR is granted as its sysfs resource file", "[pciback][e2e][bar][sysfs]") {
    BackendOptions o = emulating({});
    hv::test::TempDir sys("pciback-sysfs-bar");
    // BAR0: 32-bit memory at 0xfebd0000, 4 KiB; BAR1: I/O ports (never granted).
    std::string cfg(0x18, '\0');
    const std::uint32_t ids = 0x10001af4, bar0 = 0xfebd0000, bar1 = 0xc001;
    std::memcpy(cfg.data(), &ids, 4);
    std::memcpy(cfg.data() + 0x10, &bar0, 4);
    std::memcpy(cfg.data() + 0x14, &bar1, 4);
    const auto dev = fake_host_device(sys.path(), "0000:00:05.0", cfg,
                                      "0x00000000febd0000 0x00000000febd0fff 0x0000000000040200\n"
                                      "0x000000000000c000 0x000000000000c03f 0x0000000000040101\n");
    std::string mem(4096, '\0');
    std::memcpy(mem.data(), "host-bar-bytes", 14);
    std::ofstream(dev / "resource0", std::ios::binary) << mem;
    std::ofstream(dev / "resource1", std::ios::binary) << std::string(64, '\0');
    o.sysfs_root = sys.path();
    Env env(o);
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0000:00:05.0"});
    auto front = g.connect();
    CHECK_FALSE(env.xs->read(env.bdir(g.domid) + "/bar-0-1"));
    auto m = front->map_bar(kDev0, 0);
    REQUIRE(m);
    CHECK(m->size() == 4096);
    CHECK(std::memcmp(m->data(), "host-bar-bytes", 14) == 0);
    std::memcpy(m->data() + 100, "from-guest", 10);
    std::ifstream back(dev / "resource0", std::ios::binary);
    std::string got((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>());
    REQUIRE(got.size() == 4096);
    CHECK(got.substr(100, 10) == "from-guest");
}
