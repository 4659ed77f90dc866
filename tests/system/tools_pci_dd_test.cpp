// hvctl and pciback beyond dom0: per-device PCI counters in `hvctl stat`, a hot-plug attach
// that no backend answers (withdrawn, so a later one works), and pciback as a driver domain
// (`kernel = pciback`, devices naming it with `backend=`). Real hv-min, pciback and pcifront
// guests (hvdemo-domain pci). Every wait is bounded.
#include <signal.h>

#include <catch2/catch.hpp>

#include "domain_probe.hpp"
#include "pci_rig.hpp"
#include "text_match.hpp"

using namespace hv::test::tools;

namespace {

/// A `hvctl stat` row of a PCI device: Reads, Writes, Errors, msi, msix.
struct PciRow {
    unsigned long long reads = 0, writes = 0, errors = 0, msi = 0, msix = 0;
};
std::optional<PciRow> pci_row(const std::string& stat, const std::string& dom,
                              const std::string& vdev, const std::string& backend) {
    hv::test::Groups m;
    const std::string re = "\n" + dom + " +pci " + vdev + " +" + backend +
                           R"( +Connected +(\d+) +(\d+) +- +- +(\d+) msi=(\d+) msix=(\d+)\n)";
    if (!hv::test::re_search(stat, re, &m)) {
        return std::nullopt;
    }
    return PciRow{std::stoull(m[1]), std::stoull(m[2]), std::stoull(m[3]), std::stoull(m[4]),
                  std::stoull(m[5])};
}

}  // namespace

TEST_CASE("hvctl stat shows pciback's per-device counters after known config ops",
          "[system][tools][pci][stat][root]") {
    PciRig rig;
    Daemon& d = rig.d;
    // Two guests on identical devices: c0 makes no ops of its own (its counts are what
    // pcifront's bus scan and the demo's ID read cost), c25 makes 25 reads and 25 writes, one
    // refused read and MSI on/off after the same scan.
    const int c0 = rig.create("c0", "'0001:00:02.0'", "--conf-ops 0");
    CHECK(rig.report(c0) == PciRig::one_device());
    CHECK(rig.report(c0) == "ok pci-ops 0");
    const int c25 = rig.create("c25", "'0001:00:03.0'", "--conf-ops 25");
    CHECK(rig.report(c25) == PciRig::one_device());
    CHECK(rig.report(c25) == "ok pci-ops 25");
    std::string stat;
    std::optional<PciRow> r0, r25;
    const bool counted = eventually(
        [&] {
            stat = d.hvctl({"stat"}).out;
            r0 = pci_row(stat, "c0", "00:00.0", "Domain-0");
            r25 = pci_row(stat, "c25", "00:00.0", "Domain-0");
            return r0 && r25 && r0->msi == 2 && r25->msi == 2 && r25->writes == 25;
        },
        std::chrono::seconds(10));
    INFO(stat << rig.logs());
    REQUIRE(counted);
    CHECK(r0->reads > 0);
    CHECK(r0->writes == 0);
    CHECK(r0->errors == 1);  // the read at 0x1000
    CHECK(r0->msix == 0);
    CHECK(r25->reads == r0->reads + 25);
    CHECK(r25->writes == 25);
    CHECK(r25->errors == 1);
    CHECK(r25->msix == 0);
    // The same numbers are pciback's keys (statistics/<vdev>), read through the table.
    const std::string be = "/local/domain/0/backend/pci/" + std::to_string(c25) + "/0";
    CHECK(rd(*rig.xs, be + "/statistics/0000-00-00-0/conf_write") == "25");
}

TEST_CASE("a pci-attach waits for a Connected frontend, one no backend answers is withdrawn, and a later attach works",
          "[system][tools][pci][hotplug][root]") {
    PciRig rig;
    Daemon& d = rig.d;
    hv::xs::Client& xs = *rig.xs;
    const int id = rig.create("hp", "'0001:00:02.0'");
    REQUIRE(rig.report(id) == PciRig::one_device());
    const std::string be = "/local/domain/0/backend/pci/" + std::to_string(id) + "/0";
    const std::string fe = "/local/domain/" + std::to_string(id) + "/device/pci/0";
    REQUIRE(eventually([&] { return rd(xs, be + "/state") == "4" && rd(xs, fe + "/state") == "4"; }));
    // A frontend still in Reconfiguring (as after a withdrawn hot-plug, below) would answer a
    // new request's 7 with that stale state: hvctl waits for it, then gives up, nothing written.
    REQUIRE(xs.write(fe + "/state", "7"));
    ProcResult r = d.hvctl({"pci-attach", "hp", "0001:00:03.0"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("is not ready (backend state 4, frontend state 7,") != std::string::npos);
    CHECK(rd(xs, be + "/num_devs") == "1");
    CHECK_FALSE(xs.read(be + "/dev-1"));
    REQUIRE(xs.write(fe + "/state", "4"));
    {
        Stopped stop(rig.pciback.pid());
        r = d.hvctl({"pci-attach", "hp", "0001:00:03.0"});
    }
    INFO(r.err << rig.logs());
    CHECK(r.rc == 1);
    CHECK(r.err.find("did not complete the hot-plug within 10 s") != std::string::npos);
    CHECK(r.err.find("the request was withdrawn") != std::string::npos);
    // Nothing of the request is left: slot 1, the num_devs bump, Reconfiguring.
    CHECK(rd(xs, be + "/num_devs") == "1");
    for (const char* k : {"dev-1", "key-1", "opts-1", "state-1", "vdev-1"}) {
        CHECK_FALSE(xs.read(be + "/" + k));
    }
    CHECK(rd(xs, be + "/state") == "4");
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n00.0 0001:00:02.0\n");
    // The device is free, and the same attach now works (hvctl first waits for the frontend,
    // which answered the withdrawn 7 with its own Reconfiguring, to be Connected again).
    rig.attach({"hp", "0001:00:03.0"});
    CHECK(rig.report(id) == PciRig::two_devices());
    CHECK(d.hvctl({"pci-list", "hp"}).out ==
          "Vdev Device\n00.0 0001:00:02.0\n01.0 0001:00:03.0\n");
}

TEST_CASE("pciback as an isolated driver domain serves a pcifront guest, and its destroy closes it",
          "[system][tools][pci][driver-domain][root]") {
    PciRig rig(PciRig::Mode::driver_domain);
    Daemon& d = rig.d;
    hv::xs::Client& xs = *rig.xs;
    const int dd = rig.pciback_domid;
    REQUIRE(dd > 0);
    INFO(rig.logs());
    // The registry: its emulated devices recorded by the toolstack, readable by it alone; no
    // domain may write there.
    CHECK(perms_text(xs, "/hvkit/pci/emulated/0001-00-02-0") == "n0 r" + std::to_string(dd));
    CHECK(rd(xs, "/hvkit/pci/emulated/0001-00-02-0/backend-id") == std::to_string(dd));
    CHECK(perms_text(xs, "/hvkit/pci/emulated") == "n0");

    const int id = rig.create("hp", "'0001:00:02.0,backend=pcidd'", "--conf-ops 3");
    CHECK(rig.report(id) == PciRig::one_device());
    CHECK(rig.report(id) == "ok pci-ops 3");  // config and MSI ops over the pciif page
    const std::string be =
        "/local/domain/" + std::to_string(dd) + "/backend/pci/" + std::to_string(id) + "/0";
    const std::string fe = "/local/domain/" + std::to_string(id) + "/device/pci/0";
    CHECK(eventually([&] { return rd(xs, be + "/state") == "4"; }));
    CHECK(rd(xs, fe + "/backend-id") == std::to_string(dd));
    // libxl's permissions: each side reads the other's directory, nothing more; the registry
    // entry of the device it serves is readable by the driver domain, the other one is not.
    CHECK(perms_text(xs, be) == "n" + std::to_string(dd) + " r" + std::to_string(id));
    CHECK(perms_text(xs, fe) == "n" + std::to_string(id) + " r" + std::to_string(dd));
    CHECK(perms_text(xs, "/hvkit/pci/assignable/0001-00-02-0") == "n0 r" + std::to_string(dd));
    CHECK(perms_text(xs, "/hvkit/pci/assignable/0001-00-03-0") == "n0");
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n00.0 0001:00:02.0\n");

    // hvctl stat: the device with its driver domain and the ops the guest made.
    std::string stat;
    std::optional<PciRow> row;
    CHECK(eventually(
        [&] {
            stat = d.hvctl({"stat"}).out;
            row = pci_row(stat, "hp", "00:00.0", "pcidd");
            return row && row->writes == 3 && row->msi == 2;
        },
        std::chrono::seconds(10)));
    INFO(stat);

    // Hot-plug through the driver domain (backend= as a third argument).
    rig.attach({"hp", "0001:00:03.0", "backend=pcidd"});
    ProcResult r;
    CHECK(rig.report(id) == PciRig::two_devices());
    CHECK(perms_text(xs, "/hvkit/pci/assignable/0001-00-03-0") == "n0 r" + std::to_string(dd));
    // The bus is pcidd's: a device for another backend is refused.
    r = d.hvctl({"pci-detach", "hp", "0001:00:03.0"});
    REQUIRE(r.rc == 0);
    CHECK(rig.report(id) == PciRig::one_device());
    CHECK(perms_text(xs, "/hvkit/pci/assignable/0001-00-03-0") == "n0");  // served no more
    r = d.hvctl({"pci-attach", "hp", "0001:00:03.0,backend=Domain-0"});
    CHECK(r.rc == 1);
    CHECK(r.err ==
          "hvctl pci-attach: hp's PCI bus is served by pcidd (id " + std::to_string(dd) +
              "), not Domain-0: one backend serves a domain's PCI bus\n");

    // Destroying the driver domain closes what it serves: the guest loses its bus, both
    // directories go, its announcements and its registry access too; the guest lives on.
    r = d.hvctl({"destroy", PciRig::kDriverDomain});
    CHECK(r.rc == 0);
    CHECK(r.err.find("did not reach Closed") == std::string::npos);
    rig.pciback_domid = 0;
    CHECK_FALSE(xs.read(be));
    CHECK_FALSE(xs.read(fe));
    CHECK_FALSE(xs.read("/hvkit/pci/emulated/0001-00-02-0"));
    CHECK(perms_text(xs, "/hvkit/pci/emulated") == "n0");
    CHECK(perms_text(xs, "/hvkit/pci/assignable/0001-00-02-0") == "n0");  // its right went too
    CHECK(d.hvctl({"list", "hp"}).rc == 0);
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n");
}

TEST_CASE("a pci backend= naming no domain or a domain that is not a driver domain is refused",
          "[system][tools][pci][driver-domain][root]") {
    PciRig rig(PciRig::Mode::driver_domain);
    Daemon& d = rig.d;
    const std::string guest = "name = \"hp\"\nmemory = 16\nkernel = \"" + bin_dir +
                              "/hvdemo-domain\"\ncmdline = \"pci --status " + d.status_fifo() +
                              "\"\n";
    ProcResult r = d.hvctl(
        {"create", d.write_cfg("a.cfg", guest + "pci = [ '0001:00:02.0,backend=nosuch' ]\n")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl create: pci: backend domain 'nosuch' does not exist\n") !=
          std::string::npos);
    r = d.hvctl({"create", d.write_cfg("b.cfg", guest + "pci = [ '0001:00:02.0,backend=pcidd', "
                                                        "'0001:00:03.0' ]\n")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("one backend serves a domain's PCI bus") != std::string::npos);
    CHECK(d.hvctl({"list", "hp"}).rc == 1);  // nothing created

    // A plain domain is no backend.
    r = d.hvctl({"create", d.write_cfg("hp2.cfg", "name = \"hp2\"\nmemory = 16\nkernel = \"" +
                                                      bin_dir + "/hvdemo-domain\"\ncmdline = "
                                                                "\"idle --status " +
                                                      d.status_fifo() + "\"\n")});
    REQUIRE(r.rc == 0);
    r = d.hvctl({"create", d.write_cfg("c.cfg", guest + "pci = [ '0001:00:02.0,backend=hp2' ]\n")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl create: pci: backend domain 'hp2' is not a driver domain") !=
          std::string::npos);
    REQUIRE(d.hvctl({"create", d.write_cfg("hp.cfg", guest)}).rc == 0);
    for (const char* b : {"nosuch", "hp2"}) {
        r = d.hvctl({"pci-attach", "hp", "0001:00:02.0", std::string("backend=") + b});
        CHECK(r.rc == 1);
        CHECK(r.err.find(std::string("hvctl pci-attach: pci: backend domain '") + b + "' ") !=
              std::string::npos);
    }
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n");
    CHECK(rig.d.hvctl({"pci-assignable-list"}).out == "0001:00:02.0\n0001:00:03.0\n");
    // And the driver domain takes it.
    r = d.hvctl({"pci-attach", "hp", "0001:00:02.0", "backend=pcidd"});
    INFO(r.err << rig.logs());
    CHECK(r.rc == 0);
    CHECK(d.hvctl({"pci-list", "hp"}).out == "Vdev Device\n00.0 0001:00:02.0\n");
}

TEST_CASE("a second pciback driver domain can neither declare nor alter registry entries, and "
          "the first keeps serving",
          "[system][tools][pci][driver-domain][hostile][root]") {
    PciRig rig(PciRig::Mode::driver_domain);
    Daemon& d = rig.d;
    hv::xs::Client& xs = *rig.xs;
    const int dd = rig.pciback_domid;
    REQUIRE(dd > 0);
    const int id = rig.create("hp", "'0001:00:02.0,backend=pcidd'");
    REQUIRE(rig.report(id) == PciRig::one_device());
    INFO(rig.logs());

    // An address someone emulates already is refused before the domain exists.
    const std::string dd_cfg = "memory = 16\ndriver_domain = 1\nkernel = \"" + bin_dir +
                               "/pciback\"\n";
    ProcResult r = d.hvctl({"create", d.write_cfg("dd3.cfg", "name = \"pcidd3\"\n" + dd_cfg +
                                                               "cmdline = \"--emulate "
                                                               "0001:00:02.0=testdev\"\n")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl create: pcidd3: pci 0001:00:02.0 is emulated already") !=
          std::string::npos);
    CHECK(d.hvctl({"list", "pcidd3"}).rc == 1);
    CHECK(perms_text(xs, "/hvkit/pci/emulated/0001-00-02-0") == "n0 r" + std::to_string(dd));

    r = d.hvctl({"create", d.write_cfg("dd2.cfg", "name = \"pcidd2\"\n" + dd_cfg +
                                                    "cmdline = \"--emulate "
                                                    "0001:00:04.0=testdev\"\n")});
    REQUIRE(r.rc == 0);
    const int dd2 = created_id(r.out);
    const std::string own = "/hvkit/pci/emulated/0001-00-04-0";
    CHECK(perms_text(xs, own) == "n0 r" + std::to_string(dd2));
    const Dom p2 = find_domain(d.rundir(), "pcidd2");
    REQUIRE(p2.pid > 0);
    // As pcidd2 itself (its process stopped, its own XenStore connection). A reply still on
    // its way to pciback (it may be starting up) would answer our first request: we start
    // over until our own first read is answered.
    bool probed = false;
    eventually([&] {
        Stopped stop(p2.pid);
        hv::UniqueFd xfd = steal_xenstore_fd(p2.pid);  // none yet while pciback starts
        if (!xfd && errno == ENOSYS) {
            hv::test::skip("pidfd_getfd is not available on this kernel");
        }
        if (!xfd) {
            return false;
        }
        auto as_dd2 = hv::xs::Client::from_fd(std::move(xfd));
        REQUIRE(as_dd2);
        hv::xs::Client& x2 = **as_dd2;
        if (auto v = x2.read(own); !v || *v != "testdev") {  // its own entry: readable
            return false;
        }
        probed = true;
        const std::string first = "/hvkit/pci/emulated/0001-00-02-0";
        const auto denied = std::errc::permission_denied;
        auto code = [](const auto& res) { return res ? std::error_code() : res.error(); };
        CHECK(code(x2.read(first)) == denied);
        CHECK(code(x2.write(first, "evil")) == denied);                            // alter
        CHECK(code(x2.rm(first)) == denied);                                       // remove
        CHECK(code(x2.write("/hvkit/pci/emulated/0001-00-09-0", "x")) == denied);  // declare
        CHECK(code(x2.write(own, "other")) == denied);
        CHECK(code(x2.rm(own)) == denied);
        auto rw = hv::xs::parse_permission("b" + std::to_string(dd2));
        REQUIRE(rw);
        CHECK(code(x2.set_perms(own, {*rw})) == denied);
        CHECK(code(x2.write("/hvkit/pci/assignable/0001-00-02-0", "")) == denied);
        CHECK(code(x2.write("/hvkit/pci/assignable/0001-00-04-0", "")) == denied);
        return true;
    });
    REQUIRE(probed);
    CHECK(rd(xs, "/hvkit/pci/emulated/0001-00-02-0") == "testdev");
    CHECK_FALSE(xs.read("/hvkit/pci/emulated/0001-00-09-0"));
    CHECK(perms_text(xs, "/hvkit/pci/emulated") == "n0");

    // The first one keeps serving: a hot-plug through it.
    rig.attach({"hp", "0001:00:03.0", "backend=pcidd"});
    CHECK(rig.report(id) == PciRig::two_devices());
    // pcidd2's destroy takes its entry, nothing of pcidd's.
    CHECK(d.hvctl({"destroy", "pcidd2"}).rc == 0);
    CHECK_FALSE(xs.read(own));
    CHECK(perms_text(xs, "/hvkit/pci/emulated/0001-00-02-0") == "n0 r" + std::to_string(dd));
}

TEST_CASE("a pciback driver domain killed by SIGKILL leaves no permission naming it",
          "[system][tools][pci][driver-domain][root]") {
    PciRig rig(PciRig::Mode::driver_domain);
    Daemon& d = rig.d;
    hv::xs::Client& xs = *rig.xs;
    const int dd = rig.pciback_domid;
    REQUIRE(dd > 0);
    const int id = rig.create("hp", "'0001:00:02.0,backend=pcidd'");
    REQUIRE(rig.report(id) == PciRig::one_device());
    INFO(rig.logs());
    const std::string ds = std::to_string(dd);
    const std::string be = "/local/domain/" + ds + "/backend/pci/" + std::to_string(id) + "/0";
    const std::string fe = "/local/domain/" + std::to_string(id) + "/device/pci/0";
    const std::string reg = "/hvkit/pci/assignable/0001-00-02-0";
    REQUIRE(perms_text(xs, reg) == "n0 r" + ds);
    REQUIRE(perms_text(xs, fe) == "n" + std::to_string(id) + " r" + ds);
    const Dom p = find_domain(d.rundir(), PciRig::kDriverDomain);
    REQUIRE(p.pid > 0);
    REQUIRE(::kill(p.pid, SIGKILL) == 0);
    // Its death releases it in XenStore: every list that named it forgets it (a later domain
    // given the same id inherits nothing), what it owned is dom0's.
    CHECK(eventually([&] { return perms_text(xs, reg) == "n0"; }));
    CHECK(perms_text(xs, "/hvkit/pci/emulated/0001-00-02-0") == "n0");
    CHECK(perms_text(xs, fe) == "n" + std::to_string(id));
    CHECK(perms_text(xs, be) == "n0 r" + std::to_string(id));
    // It left hv-min's list with its death (no destroy to run): what the toolstack recorded
    // for it goes when next seen, so a new pciback driver domain can emulate the same devices.
    CHECK(d.hvctl({"list", PciRig::kDriverDomain}).rc == 1);
    const ProcResult r = d.hvctl(
        {"create", d.write_cfg("again.cfg", "name = \"pcidd\"\nmemory = 16\ndriver_domain = 1\n"
                                            "kernel = \"" + bin_dir + "/pciback\"\ncmdline = \""
                                            "--emulate 0001:00:02.0=testdev\"\n")});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    const int again = created_id(r.out);
    rig.pciback_domid = again;
    CHECK(perms_text(xs, "/hvkit/pci/emulated/0001-00-02-0") == "n0 r" + std::to_string(again));
    CHECK_FALSE(xs.read("/hvkit/pci/emulated/0001-00-03-0"));
    // The guest's bus has no backend left to answer: its destroy does not wait for one.
    const ProcResult g = d.hvctl({"destroy", "hp"});
    CHECK(g.rc == 0);
    CHECK(g.err.find("did not reach Closed") == std::string::npos);
}
