// pciback + libpcifront end to end: the xenbus handshake (xen-abi.md §7.4), a guest reading
// and writing the emulated device's config space through pcifront, hot-plug, teardown.
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace hv;
using namespace hv::pci;
using namespace hv::pci::test;

TEST_CASE("a guest reads the emulated device's config space through pcifront", "[pciback][e2e]") {
    Env env;
    CHECK(env.read("/hvkit/pci/emulated/0001-00-02-0") == "testdev");
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    const std::string b = env.bdir(g.domid);
    CHECK(env.read(b + "/vdev-0") == "0000:00:00.00");
    CHECK(env.read(b + "/state-0") == "3");
    CHECK(env.read(b + "/root_num") == "1");
    CHECK(env.read(b + "/root-0") == "0000:00");
    CHECK(env.wait_value(b + "/state", "4"));
    REQUIRE(front->devices() == std::vector<pcifront::Address>{kDev0});

    CHECK(front->conf_read(kDev0, 0x00, 4).value() == 0x00051b36);
    CHECK(front->conf_read(kDev0, 0x0a, 2).value() == 0xff00);
    CHECK(front->conf_read(kDev0, 0x10, 4).value() == 0xfebf0000);
    CHECK(front->conf_read(kDev0, 0x42, 2).value() == 0x0003);
    // BAR sizing through the ops.
    REQUIRE(front->conf_write(kDev0, 0x10, 4, 0xffffffff));
    CHECK(front->conf_read(kDev0, 0x10, 4).value() == 0xfffff000);
    REQUIRE(front->conf_write(kDev0, 0x10, 4, 0xfebf0000));
    // A write to a read-only field is dropped, not failed.
    REQUIRE(front->conf_write(kDev0, 0x00, 2, 0xabcd));
    CHECK(front->conf_read(kDev0, 0x00, 2).value() == 0x1b36);
    REQUIRE(front->conf_write(kDev0, 0x04, 2, 0x0002));
    CHECK(front->conf_read(kDev0, 0x04, 2).value() == 0x0002);
    // Errors come back as the pciif codes.
    auto bad = front->conf_read(kDev0, 0x02, 4);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == pcifront::op_error(rings::XEN_PCI_ERR_invalid_offset));
    auto none = front->conf_read(pcifront::Address{0, 0, 8}, 0, 2);
    REQUIRE_FALSE(none);
    CHECK(none.error() == pcifront::op_error(rings::XEN_PCI_ERR_dev_not_found));
    // Per-device counters appear in the backend's statistics.
    CHECK(env.wait_value(b + "/statistics/0000-00-00-0/errors", "1"));
}

TEST_CASE("a device missing from the assignable registry is refused with an error node and Closing", "[pciback][e2e]") {
    Env env;
    Guest g(env, "g1");
    SECTION("a host device") { env.attach_bus(g.domid, {"0000:00:1f.0"}, {}, false); }
    SECTION("an emulated device") { env.attach_bus(g.domid, {"0001:00:02.0"}, {}, false); }
    CHECK(env.wait_value(env.bdir(g.domid) + "/state", "5"));
    const std::string err = env.read("/local/domain/0/error/backend/pci/" +
                                     std::to_string(g.domid.get()) + "/0/error");
    CHECK(err.find("19 ") == 0);  // ENODEV
}

TEST_CASE("an assignable host device is exported from sysfs", "[pciback][e2e][sysfs]") {
    BackendOptions o = emulating({});
    hv::test::TempDir sys("pciback-sysfs");
    fake_host_device(sys.path(), "0000:00:05.0", std::string("\xf4\x1a\x00\x10", 4), "");
    o.sysfs_root = sys.path();
    Env env(o);
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0000:00:05.0"});
    auto front = g.connect();
    REQUIRE(front->devices().size() == 1);
    CHECK(front->conf_read(kDev0, 0, 4).value() == 0x10001af4);
}

TEST_CASE("devices hot-plug into and out of a running guest through Reconfiguring", "[pciback][e2e][state]") {
    Env env(emulating({"0001:00:02.0", "0001:00:03.0"}));
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    const std::string b = env.bdir(g.domid);
    REQUIRE(env.wait_value(b + "/state", "4"));
    REQUIRE(front->devices().size() == 1);

    const auto drive = [&](const std::string& until) { g.drive(*front, until); };
    env.hotplug_add(g.domid, "0001:00:03.0");
    drive("4");
    CHECK(env.read(b + "/state-1") == "3");
    CHECK(env.read(b + "/vdev-1") == "0000:00:01.00");
    REQUIRE(front->devices().size() == 2);
    CHECK(front->conf_read(pcifront::Address{0, 0, 8}, 0, 4).value() == 0x00051b36);

    env.hotplug_remove(g.domid, 0);
    drive("4");
    CHECK(env.read(b + "/state-0") == "6");
    REQUIRE(front->devices() == std::vector<pcifront::Address>{pcifront::Address{0, 0, 8}});
    auto gone = front->conf_read(kDev0, 0, 4);
    REQUIRE_FALSE(gone);
    CHECK(gone.error() == pcifront::op_error(rings::XEN_PCI_ERR_dev_not_found));
}

TEST_CASE("a frontend that closes leaves the device reset for the next guest", "[pciback][e2e][state]") {
    Env env;
    {
        Guest g(env, "g1");
        env.attach_bus(g.domid, {"0001:00:02.0"});
        auto front = g.connect();
        REQUIRE(front->conf_write(kDev0, 0x04, 2, 0x0006));
        REQUIRE(front->conf_write(kDev0, 0x18, 4, 0xffffffff));
        front.reset();  // frontend Closed
        CHECK(env.wait_value(env.bdir(g.domid) + "/state", "6"));
        REQUIRE(xenbus::request_close(*env.xs, DomId(0), "pci", g.domid, 0));
        REQUIRE(xenbus::remove_device(*env.xs, DomId(0), "pci", g.domid, 0));
    }
    Guest g2(env, "g2");
    env.attach_bus(g2.domid, {"0001:00:02.0"});
    auto front = g2.connect();
    CHECK(front->conf_read(kDev0, 0x04, 2).value() == 0);
    CHECK(front->conf_read(kDev0, 0x18, 4).value() == 0x0000000c);
}
