// hvctl's PCI verbs against the real programs: hv-min (private rundir), pciback hosting two
// emulated devices, and guest domains running pcifront (hvdemo-domain pci), which report the
// devices they see (virtual BDF and vendor:device read through pcifront) on the status FIFO.
// Create with pci=, pci-list, pci-attach (hot-plug through Reconfiguring), pci-detach (the
// unplug, then the slot renumbering), pci-attach again, a first device hot-plugged into a
// domain that had none, destroy; and the refusals. Every wait is bounded.
#include <catch2/catch.hpp>

#include "pci_rig.hpp"

using namespace hv::test::tools;

TEST_CASE("pci devices hot-plug into a running pcifront guest with hvctl",
          "[system][tools][pci][hotplug][root]") {
    PciRig rig;
    Daemon& d = rig.d;
    hv::xs::Client& xs = *rig.xs;
    const int id = rig.create("hp", "'0001:00:02.0'");
    REQUIRE(id > 0);
    const std::string be = "/local/domain/0/backend/pci/" + std::to_string(id) + "/0";
    INFO(rig.logs());
    CHECK(rig.report(id) == PciRig::one_device());
    CHECK(eventually([&] { return rd(xs, be + "/state") == "4"; }));
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n00.0 0001:00:02.0\n");

    // Hot-plug: the guest sees it arrive in the next free virtual slot.
    rig.attach({"hp", "0001:00:03.0,permissive=1"});
    ProcResult r;
    CHECK(rig.report(id) == PciRig::two_devices());
    CHECK(d.hvctl({"pci-list", "hp"}).out ==
          "Vdev Device\n00.0 0001:00:02.0\n01.0 0001:00:03.0\n");
    CHECK(rd(xs, be + "/opts-1") == "msitranslate=0,power_mgmt=0,permissive=1,rdm_policy=relaxed");
    r = d.hvctl({"pci-attach", "hp", "0001:00:03.0"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("is already assigned to domain hp") != std::string::npos);

    // Unplug the first: the guest loses it, slot 1 becomes slot 0, num_devs drops.
    r = d.hvctl({"pci-detach", "hp", "0001:00:02.0"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(rig.report(id) == std::string("ok pci 0000:00:01.0=") + kTestdev);
    CHECK(rd(xs, be + "/num_devs") == "1");
    CHECK(rd(xs, be + "/dev-0") == "0001:00:03.0");
    CHECK(rd(xs, be + "/vdev-0") == "0000:00:01.00");
    CHECK(rd(xs, be + "/opts-0") == "msitranslate=0,power_mgmt=0,permissive=1,rdm_policy=relaxed");
    CHECK_FALSE(xs.read(be + "/dev-1"));
    CHECK_FALSE(xs.read(be + "/state-1"));
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n01.0 0001:00:03.0\n");
    CHECK(d.hvctl({"pci-assignable-list"}).out == "0001:00:02.0\n0001:00:03.0\n");

    // And back again, into the slot it freed.
    rig.attach({"hp", "0001:00:02.0"});
    CHECK(rig.report(id) == PciRig::two_devices());
    CHECK(d.hvctl({"pci-list", "hp"}).out ==
          "Vdev Device\n01.0 0001:00:03.0\n00.0 0001:00:02.0\n");

    // A domain with no PCI bus gets one with its first device.
    const std::string cfg2 = d.write_cfg(
        "hp2.cfg", "name = \"hp2\"\nmemory = 16\nkernel = \"" + bin_dir +
                       "/hvdemo-domain\"\ncmdline = \"pci --status " + d.status_fifo() + "\"\n");
    r = d.hvctl({"create", cfg2});
    REQUIRE(r.rc == 0);
    const int id2 = created_id(r.out);
    r = d.hvctl({"pci-attach", "hp2", "0001:00:02.0"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("is already assigned to domain hp") != std::string::npos);
    r = d.hvctl({"pci-detach", "hp", "0001:00:02.0"});
    REQUIRE(r.rc == 0);
    CHECK(rig.report(id) == std::string("ok pci 0000:00:01.0=") + kTestdev);
    rig.attach({"hp2", "0001:00:02.0"});
    CHECK(rig.report(id2) == PciRig::one_device());
    CHECK(d.hvctl({"pci-list", "hp2"}).out == "Vdev Device\n00.0 0001:00:02.0\n");

    // destroy releases hp's device: hp2 can take it; both stay assignable.
    r = d.hvctl({"destroy", "hp"});
    CHECK(r.rc == 0);
    CHECK(r.err.find("did not reach Closed") == std::string::npos);  // pciback closed it
    CHECK_FALSE(xs.read(be + "/num_devs"));
    rig.attach({"hp2", "0001:00:03.0"});
    CHECK(rig.report(id2) == PciRig::two_devices());
    CHECK(d.hvctl({"destroy", "hp2"}).rc == 0);
    CHECK(d.hvctl({"pci-assignable-remove", "0001:00:02.0"}).rc == 0);
    CHECK(d.hvctl({"pci-assignable-remove", "0001:00:03.0"}).rc == 0);
    CHECK_FALSE(rig.pciback.wait(10));  // still serving: no guest's teardown ended it
}
