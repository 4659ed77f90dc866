// hvctl's PCI verbs against the real hv-min: the assignable registry, `pci = [...]` in
// create (libxl's keys, permissions), pci-list, every refusal, pci-detach's slot removal
// and renumbering, and the release of a domain's devices by destroy and by its death. A
// second case makes this machine's virtio RNG assignable through sysfs and gives it back
// (skipped when there is none). Hot-plug with the real pciback and pcifront:
// tools_pci_hotplug_test.cpp. Every wait is bounded.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "skip.hpp"
#include "tools_harness.hpp"
#include "xenstore/client.hpp"

using namespace hv::test::tools;

namespace {

std::string pci_idle_cfg(const Daemon& d, const std::string& name, const std::string& pci) {
    return d.write_cfg(name + ".cfg", "name = \"" + name + "\"\nmemory = 16\nkernel = \"" +
                                          bin_dir + "/hvdemo-domain\"\ncmdline = \"idle --status " +
                                          d.status_fifo() + "\"\npci = [ " + pci + " ]\n");
}

}  // namespace

TEST_CASE("pci devices in a domain file: keys as libxl writes them and every refusal",
          "[system][tools][pci][root]") {
    hv::test::require_root();
    Daemon d;
    REQUIRE(d.ready());
    auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
    REQUIRE(x);
    hv::xs::Client& xs = **x;
    // No backend runs in this case: pciback's announcement of the devices it emulates is
    // written as it would write it (the hot-plug test runs the real pciback).
    for (const char* e : {"0001-00-02-0", "0001-00-03-0"}) {
        REQUIRE(xs.write(std::string("/hvkit/pci/emulated/") + e, "testdev"));
    }

    ProcResult r = d.hvctl({"pci-assignable-list"});
    CHECK(r.rc == 0);
    CHECK(r.out.empty());
    CHECK(d.hvctl({"pci-assignable-add", "0001:00:03.0"}).rc == 0);
    CHECK(d.hvctl({"pci-assignable-add", "0001:00:02.0"}).rc == 0);
    r = d.hvctl({"pci-assignable-add", "0001:00:02.0"});
    CHECK(r.rc == 0);
    CHECK(r.err == "warning: 0001:00:02.0 is already assignable\n");
    r = d.hvctl({"pci-assignable-add", "0001:00:04.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-assignable-add: no PCI device 0001:00:04.0 on this host (and "
                   "pciback emulates none at that address)\n");
    CHECK(d.hvctl({"pci-assignable-list"}).out == "0001:00:02.0\n0001:00:03.0\n");
    CHECK(rd(xs, "/hvkit/pci/assignable/0001-00-02-0").empty());  // no host driver

    // A device that is not assignable (or does not exist) keeps the domain from being made.
    r = d.hvctl({"create", pci_idle_cfg(d, "nope", "'0001:00:04.0'")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl create: 0001:00:04.0 is not assignable (see hvctl "
                     "pci-assignable-add)\n") != std::string::npos);
    CHECK(d.hvctl({"list"}).out.find("\nnope ") == std::string::npos);

    const std::string bad = pci_idle_cfg(d, "g1", "'0001:00:02.0',\n  '0001:00:03.0,bogus=1'");
    r = d.hvctl({"create", bad});
    CHECK(r.rc == 1);
    CHECK(r.err.find(bad + ":6: pci '0001:00:03.0,bogus=1': unknown option 'bogus'") !=
          std::string::npos);
    r = d.hvctl({"create", pci_idle_cfg(d, "g1", "'0001:00:02.0', '0002:00:03.0@04'")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl create: 0002:00:03.0 is not assignable") != std::string::npos);
    r = d.hvctl({"create", pci_idle_cfg(d, "g1", "'0001:00:02.0,permissive=1', '0001:00:03.0@04'")});
    INFO(r.err << d.log());
    REQUIRE(r.rc == 0);
    const int id = created_id(r.out);
    REQUIRE(id > 0);
    const std::string fe_id = std::to_string(id);
    const std::string be = "/local/domain/0/backend/pci/" + fe_id + "/0";
    const std::string fe = "/local/domain/" + fe_id + "/device/pci/0";
    CHECK(rd(xs, be + "/num_devs") == "2");
    CHECK(rd(xs, be + "/domain") == "g1");
    CHECK(rd(xs, be + "/dev-0") == "0001:00:02.0");
    CHECK(rd(xs, be + "/key-0") == "0001:00:02.0");
    CHECK(rd(xs, be + "/opts-0") == "msitranslate=0,power_mgmt=0,permissive=1,rdm_policy=relaxed");
    CHECK(rd(xs, be + "/state-0") == "1");
    CHECK(rd(xs, be + "/dev-1") == "0001:00:03.0");
    CHECK(rd(xs, be + "/vdevfn-1") == "20");
    CHECK(rd(xs, be + "/opts-1") == "msitranslate=0,power_mgmt=0,permissive=0,rdm_policy=relaxed");
    CHECK(rd(xs, be + "/state") == "1");
    CHECK(rd(xs, be + "/online") == "1");
    CHECK(rd(xs, be + "/frontend") == fe);
    CHECK(rd(xs, be + "/frontend-id") == fe_id);
    CHECK(rd(xs, fe + "/backend") == be);
    CHECK(rd(xs, fe + "/backend-id") == "0");
    CHECK(rd(xs, fe + "/state") == "1");
    CHECK(perms_text(xs, be) == "n0 r" + fe_id);
    CHECK(perms_text(xs, fe) == "n" + fe_id + " r0");

    CHECK(d.hvctl({"pci-list", "g1"}).out == "Vdev Device\n--.- 0001:00:02.0\n--.- 0001:00:03.0\n");
    // vdev-i comes from the backend: only a well-formed value is shown. The guest's own
    // frontend directory is never read (its `backend` node pointing elsewhere changes nothing).
    REQUIRE(xs.write(be + "/vdev-0", "0000:00:01.00"));
    REQUIRE(xs.write(be + "/vdev-1", "0000:00:02.00\n1f.7 6666:66:66.6"));
    REQUIRE(xs.write(fe + "/backend", "/local/domain/0/backend/pci/9/0"));
    CHECK(d.hvctl({"pci-list", fe_id}).out == "Vdev Device\n01.0 0001:00:02.0\n--.- 0001:00:03.0\n");
    r = d.hvctl({"pci-list", "ghost"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-list: no domain named 'ghost'\n");

    // Held by g1: nobody else gets it, and it cannot leave the assignable list.
    r = d.hvctl({"create", pci_idle_cfg(d, "g2", "'0001:00:02.0'")});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl create: 0001:00:02.0 is already assigned to domain g1 (id " + fe_id +
                     ")\n") != std::string::npos);
    CHECK(d.hvctl({"list"}).out.find("\ng2 ") == std::string::npos);
    r = d.hvctl({"pci-attach", "g1", "0001:00:02.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-attach: 0001:00:02.0 is already assigned to domain g1 (id " + fe_id +
                       ")\n");
    r = d.hvctl({"pci-attach", "g1", "0001:00:04.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-attach: 0001:00:04.0 is not assignable (see hvctl "
                   "pci-assignable-add)\n");
    r = d.hvctl({"pci-attach", "Domain-0", "0001:00:02.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-attach: Domain-0 owns the host's devices already\n");
    r = d.hvctl({"pci-assignable-remove", "0001:00:02.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-assignable-remove: 0001:00:02.0 is assigned to domain g1 (id " +
                       fe_id + ") (pci-detach it first)\n");
    r = d.hvctl({"pci-assignable-add", "0001:00:02.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-assignable-add: 0001:00:02.0 is assigned to domain g1 (id " + fe_id +
                       ")\n");
    r = d.hvctl({"pci-assignable-remove", "0001:00:04.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-assignable-remove: 0001:00:04.0 is not assignable\n");
    r = d.hvctl({"pci-detach", "g1", "0001:00:04.0"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-detach: 0001:00:04.0 is not assigned to g1\n");

    // No pcifront: the backend is never Connected, so the §7.4 unplug cannot run. Without
    // --force nothing changes; with it the slot goes and the higher one moves down.
    r = d.hvctl({"pci-detach", "g1", "0001:00:02.0"});
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl pci-detach: pci bus at " + be + " is not ready (backend state 1,") !=
          std::string::npos);
    CHECK(rd(xs, be + "/num_devs") == "2");
    CHECK(rd(xs, be + "/dev-0") == "0001:00:02.0");
    r = d.hvctl({"pci-detach", "--force", "g1", "0001:00:02.0"});
    CHECK(r.rc == 0);
    CHECK(r.err.find("warning: g1: removing 0001:00:02.0 without the backend (--force)") !=
          std::string::npos);
    CHECK(rd(xs, be + "/num_devs") == "1");
    CHECK(rd(xs, be + "/dev-0") == "0001:00:03.0");
    CHECK(rd(xs, be + "/key-0") == "0001:00:03.0");
    CHECK(rd(xs, be + "/vdevfn-0") == "20");
    CHECK(rd(xs, be + "/vdev-0") == "0000:00:02.00\n1f.7 6666:66:66.6");  // moved as it was
    CHECK_FALSE(xs.read(be + "/dev-1"));
    CHECK_FALSE(xs.read(be + "/vdevfn-1"));
    CHECK(d.hvctl({"pci-list", "g1"}).out == "Vdev Device\n--.- 0001:00:03.0\n");
    // Detached, it stays assignable and is free for another domain.
    CHECK(d.hvctl({"pci-assignable-list"}).out == "0001:00:02.0\n0001:00:03.0\n");
    r = d.hvctl({"pci-attach", "g1", "0001:00:02.0"});  // hot-plug needs a Connected backend
    CHECK(r.rc == 1);
    CHECK(r.err.find("hvctl pci-attach: pci bus at " + be + " is not ready") !=
          std::string::npos);
    CHECK(rd(xs, be + "/num_devs") == "1");

    r = d.hvctl({"create", pci_idle_cfg(d, "g2", "'0001:00:02.0'")});
    REQUIRE(r.rc == 0);
    const int id2 = created_id(r.out);
    const std::string be2 = "/local/domain/0/backend/pci/" + std::to_string(id2) + "/0";
    CHECK(rd(xs, be2 + "/dev-0") == "0001:00:02.0");

    // destroy releases g1's device; g2's death (its program killed, no destroy) releases its.
    r = d.hvctl({"destroy", "g1"});
    CHECK(r.rc == 0);
    CHECK_FALSE(xs.read(be + "/num_devs"));
    CHECK_FALSE(xs.read(fe + "/state"));
    const pid_t pid2 = domain_pid(d, "g2");
    REQUIRE(pid2 > 0);
    REQUIRE(::kill(pid2, SIGKILL) == 0);
    CHECK(eventually([&] { return d.hvctl({"list"}).out.find("\ng2 ") == std::string::npos; }));
    r = d.hvctl({"pci-assignable-remove", "0001:00:02.0"});
    CHECK(r.rc == 0);
    INFO(r.err);
    CHECK_FALSE(xs.read(be2 + "/num_devs"));  // swept: its domain is gone
    CHECK(d.hvctl({"pci-assignable-remove", "-r", "0001:00:03.0"}).rc == 0);
    CHECK(d.hvctl({"pci-assignable-list"}).out.empty());
    CHECK_FALSE(xs.read("/hvkit/pci/assignable/0001-00-02-0"));

    // xl's seize=1: a device that is not assignable yet is made so by create, and by
    // pci-attach; one that does not exist is still refused.
    r = d.hvctl({"create", pci_idle_cfg(d, "g3", "'0001:00:02.0,seize=1'")});
    CHECK(r.rc == 0);
    CHECK(d.hvctl({"pci-assignable-list"}).out == "0001:00:02.0\n");
    r = d.hvctl({"pci-attach", "g3", "0001:00:04.0,seize=1"});
    CHECK(r.rc == 1);
    CHECK(r.err == "hvctl pci-attach: no PCI device 0001:00:04.0 on this host (and pciback "
                   "emulates none at that address)\n");
    CHECK(d.hvctl({"destroy", "g3"}).rc == 0);
    r = d.hvctl({"create", pci_idle_cfg(d, "g4", "")});
    REQUIRE(r.rc == 0);
    const int id4 = created_id(r.out);
    r = d.hvctl({"pci-attach", "g4", "0001:00:03.0,seize=1"});  // no pciback: no answer
    CHECK(r.rc == 1);
    CHECK(r.err.find("no backend answered within 10 s (is pciback running in domain 0?); "
                     "device removed") != std::string::npos);
    CHECK(d.hvctl({"pci-assignable-list"}).out == "0001:00:02.0\n0001:00:03.0\n");
    CHECK_FALSE(xs.read("/local/domain/0/backend/pci/" + std::to_string(id4) + "/0"));
    CHECK_FALSE(xs.read("/local/domain/" + std::to_string(id4) + "/device/pci/0"));
    CHECK(d.hvctl({"pci-list", "g4"}).out == "Vdev Device\n");
}

namespace {

/// This machine's virtio RNG (1af4:1044 modern, 1af4:1005 legacy), the one PCI device a test
/// may take from its driver; "" when there is none.
std::string find_virtio_rng() {
    for (const std::string& name : dir_entries("/sys/bus/pci/devices")) {
        const std::string dir = "/sys/bus/pci/devices/" + name;
        const std::string vendor = run_process({"/bin/cat", dir + "/vendor"}).out;
        const std::string device = run_process({"/bin/cat", dir + "/device"}).out;
        if (vendor == "0x1af4\n" && (device == "0x1044\n" || device == "0x1005\n")) {
            return name;
        }
    }
    return {};
}

std::string driver_of(const std::string& bdf) {
    char buf[256];
    const std::string link = "/sys/bus/pci/devices/" + bdf + "/driver";
    const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n <= 0) {
        return {};
    }
    const std::string t(buf, static_cast<std::size_t>(n));
    return t.substr(t.rfind('/') + 1);
}

void write_sysfs(const std::string& path, const std::string& value) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!::write(fd, value.data(), value.size());
        ::close(fd);
    }
}

/// Whether `driver` lets sysfs unbind and bind its devices (a driver built with
/// suppress_bind_attrs has neither file).
bool driver_allows_unbind(const std::string& driver) {
    return ::access(("/sys/bus/pci/drivers/" + driver + "/unbind").c_str(), F_OK) == 0;
}

/// Gives the device back to its driver however the test ends.
struct RebindGuard {
    std::string bdf;
    std::string driver;
    ~RebindGuard() {
        write_sysfs("/sys/bus/pci/devices/" + bdf + "/driver_override", "\n");
        if (!driver.empty() && driver_of(bdf) != driver) {
            if (!driver_of(bdf).empty()) {
                write_sysfs("/sys/bus/pci/devices/" + bdf + "/driver/unbind", bdf);
            }
            write_sysfs("/sys/bus/pci/drivers/" + driver + "/bind", bdf);
        }
    }
};

}  // namespace

TEST_CASE("a host device is unbound through sysfs when made assignable and rebound with -r",
          "[system][tools][pci][root]") {
    hv::test::require_root();
    const std::string bdf = find_virtio_rng();
    hv::test::skip_unless(!bdf.empty(), "no virtio RNG (1af4:1044 or 1af4:1005) on this machine: "
                                        "the only PCI device a test may unbind");
    const std::string driver = driver_of(bdf);
    hv::test::skip_unless(!driver.empty(), "the virtio RNG has no driver bound to give back");
    hv::test::skip_unless(driver_allows_unbind(driver),
                          "the virtio RNG's driver has no unbind in sysfs (suppress_bind_attrs): "
                          "the refusal is tested instead");
    RebindGuard guard{bdf, driver};
    Daemon d;
    REQUIRE(d.ready());
    auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
    REQUIRE(x);
    hv::xs::Client& xs = **x;
    const std::string override_path = "/sys/bus/pci/devices/" + bdf + "/driver_override";
    std::string key = bdf;
    std::replace(key.begin(), key.end(), ':', '-');
    std::replace(key.begin(), key.end(), '.', '-');
    key = "/hvkit/pci/assignable/" + key;

    ProcResult r = d.hvctl({"pci-assignable-add", bdf});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    CHECK(driver_of(bdf).empty());
    CHECK(run_process({"/bin/cat", override_path}).out == "pciback\n");
    CHECK(rd(xs, key) == driver);
    CHECK(d.hvctl({"pci-assignable-list"}).out == bdf + "\n");

    // Held by a domain (no backend needed for the bookkeeping): it cannot be given back.
    r = d.hvctl({"create", pci_idle_cfg(d, "rng", "'" + bdf + "'")});
    REQUIRE(r.rc == 0);
    r = d.hvctl({"pci-assignable-remove", "-r", bdf});
    CHECK(r.rc == 1);
    CHECK(r.err.find("is assigned to domain rng") != std::string::npos);
    CHECK(driver_of(bdf).empty());
    CHECK(d.hvctl({"destroy", "rng"}).rc == 0);

    // Without -r it leaves the list with no driver and no override, as xl leaves it.
    r = d.hvctl({"pci-assignable-remove", bdf});
    CHECK(r.rc == 0);
    CHECK(driver_of(bdf).empty());
    CHECK(run_process({"/bin/cat", override_path}).out == "(null)\n");
    CHECK_FALSE(xs.read(key));
    write_sysfs("/sys/bus/pci/drivers/" + driver + "/bind", bdf);
    REQUIRE(driver_of(bdf) == driver);

    // With -r it goes back to the driver it came from.
    REQUIRE(d.hvctl({"pci-assignable-add", bdf.substr(5)}).rc == 0);  // the bb:dd.f form
    CHECK(driver_of(bdf).empty());
    r = d.hvctl({"pci-assignable-remove", "-r", bdf});
    CHECK(r.rc == 0);
    CHECK(driver_of(bdf) == driver);
    CHECK(run_process({"/bin/cat", override_path}).out == "(null)\n");
    CHECK(d.hvctl({"pci-assignable-list"}).out.empty());
}

TEST_CASE("a host device whose driver allows no unbinding is refused and left as it was",
          "[system][tools][pci][root]") {
    hv::test::require_root();
    const std::string bdf = find_virtio_rng();
    hv::test::skip_unless(!bdf.empty(), "no virtio RNG (1af4:1044 or 1af4:1005) on this machine");
    const std::string driver = driver_of(bdf);
    hv::test::skip_unless(!driver.empty(), "the virtio RNG has no driver bound");
    hv::test::skip_unless(!driver_allows_unbind(driver),
                          "the virtio RNG's driver allows unbinding: the full path is tested");
    RebindGuard guard{bdf, driver};
    Daemon d;
    REQUIRE(d.ready());
    auto x = hv::xs::Client::connect(d.rundir() + "/xenstored.sock");
    REQUIRE(x);
    const std::string override_path = "/sys/bus/pci/devices/" + bdf + "/driver_override";
    const std::string before = run_process({"/bin/cat", override_path}).out;

    ProcResult r = d.hvctl({"pci-assignable-add", bdf});
    CHECK(r.rc == 1);
    CHECK(r.err.find("unbinding it from " + driver) != std::string::npos);
    CHECK(r.err.find("allows no unbinding through sysfs") != std::string::npos);
    CHECK(driver_of(bdf) == driver);  // still bound, override untouched, nothing recorded
    CHECK(run_process({"/bin/cat", override_path}).out == before);
    std::string key = bdf;
    std::replace(key.begin(), key.end(), ':', '-');
    std::replace(key.begin(), key.end(), '.', '-');
    CHECK_FALSE((*x)->read("/hvkit/pci/assignable/" + key));
    CHECK(d.hvctl({"pci-assignable-list"}).out.empty());
    // And so it cannot be given to a domain either.
    r = d.hvctl({"create", pci_idle_cfg(d, "rng", "'" + bdf + "'")});
    CHECK(r.rc != 0);
    CHECK(r.err.find("is not assignable") != std::string::npos);
}
