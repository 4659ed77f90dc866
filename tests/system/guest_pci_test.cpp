// hv-guest's PCI sysfs tree (--pci-sysfs) against the real programs: hv-min (private rundir),
// pciback hosting two emulated testdevs, and a guest domain running hv-guest whose command is
// a shell script calling Debian's lspci and setpci (-A linux-sysfs -O sysfs.path=DIR) inside
// the domain's mount namespace. The script's outputs land in the test's directory; the test
// checks them after the domain exits. Every wait is bounded.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pci_rig.hpp"

using namespace hv::test::tools;

namespace {

std::string read_text(const std::string& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

/// pci_rig.hpp's PciRig (hv-min, pciback with testdevs at 0001:00:02.0 and 0001:00:03.0)
/// with an hv-guest domain "pg" whose command is a shell script.
struct Rig {
    PciRig pci;
    Daemon& d = pci.d;

    Rig() {
        hv::test::skip_unless(std::filesystem::exists("/usr/bin/lspci") && std::filesystem::exists("/usr/bin/setpci"),
                              "needs pciutils (scripts/install-deps.sh)");
        hv::test::skip_unless(std::filesystem::exists("/dev/fuse"), "needs /dev/fuse");
    }
    ~Rig() { (void)d.hvctl({"destroy", "pg"}); }
    std::string logs() const { return pci.logs(); }

    /// Runs `script` (sh) as the command of an hv-guest domain with `pci`; waits for it to
    /// write `done` and the domain to go. The script sees $S (the tree) and $O (outputs).
    void run(const std::string& devices, const std::string& script) {
        start(devices, script);
        finish();
    }
    void start(const std::string& devices, const std::string& script) {
        const std::string out = d.dir() + "/out";
        std::filesystem::create_directories(out);
        const std::string sh = d.write_cfg("guest.sh", "S=$HV_PCI_SYSFS\nO=" + out + "\n" + script + "\ntouch $O/done\n");
        const std::string cfg = d.write_cfg(
            "pg.cfg", "name = \"pg\"\nmemory = 16\nkernel = \"" + bin_dir + "/hv-guest\"\ncmdline = \"--wait-pci 2 --pci-sysfs " +
                          d.dir() + "/sysfs -- /bin/sh " + sh + "\"\npci = [ " + devices + " ]\n");
        const ProcResult r = d.hvctl({"create", cfg});
        INFO(r.err << logs());
        REQUIRE(r.rc == 0);
    }
    /// Waits (bounded) for the script to create $O/<name>.
    bool reached(const std::string& name) {
        return eventually([&] { return std::filesystem::exists(d.dir() + "/out/" + name); }, std::chrono::seconds(30));
    }
    void finish() {
        REQUIRE(reached("done"));
        // The domain exits with its command; the tree was only ever in its mount namespace.
        REQUIRE(eventually([&] { return !contains(d.hvctl({"list"}).out, "pg"); }, std::chrono::seconds(10)));
        CHECK_FALSE(std::filesystem::exists(d.dir() + "/sysfs"));
    }
    std::string out(const std::string& f) const { return read_text(d.dir() + "/out/" + f); }
    /// Creates $O/<name> for the script to see.
    void signal(const std::string& name) const {
        std::ofstream(d.dir() + "/out/" + name).flush();
    }
};

const char* kTools =
    "L='lspci -A linux-sysfs -O sysfs.path='$S\n"
    "P='setpci -A linux-sysfs -O sysfs.path='$S\n";

}  // namespace

TEST_CASE("lspci and setpci in an hv-guest domain read and write through pcifront",
          "[system][guest][pci][root]") {
    Rig rig;
    rig.run("'0001:00:02.0', '0001:00:03.0'",
            std::string(kTools) +
                "ls $S/devices > $O/ls 2>&1\n"
                "D=$S/devices/0000:00:00.0\n"
                "for f in vendor device class revision subsystem_vendor subsystem_device irq modalias resource; do\n"
                "  echo \"$f=$(cat $D/$f)\" >> $O/attrs; done\n"
                "$L -nn > $O/nn 2>&1\n"
                "$L -vvv -nn -s 00:00.0 > $O/vvv 2>&1\n"
                "$P -s 00:00.0 COMMAND.w > $O/cmd0 2>&1\n"
                "$P -s 00:00.0 COMMAND.w=0x0546 > $O/setcmd 2>&1; echo $? >> $O/setcmd\n"
                "$P -s 00:00.0 COMMAND.w > $O/cmd1 2>&1\n"
                "$P -s 00:00.0 VENDOR_ID.w=0xabcd INTERRUPT_LINE.b=0x05 > $O/ro 2>&1\n"
                "$P -s 00:00.0 VENDOR_ID.w INTERRUPT_LINE.b >> $O/ro 2>&1\n"
                "$P -s 00:00.0 BASE_ADDRESS_0.l=0x12345000 > /dev/null 2>&1\n"
                "$P -s 00:00.0 BASE_ADDRESS_0.l > $O/bar0 2>&1\n"
                "echo x > $D/vendor 2> /dev/null; echo $? > $O/ro_attr\n"
                "$P -s 00:00.0 CAP_MSI+2.w=0x0001 > $O/msi 2>&1\n"
                "$P -s 00:00.0 52.w >> $O/msi 2>&1\n"
                "dd if=/dev/zero of=$D/config bs=1 seek=256 count=1 conv=notrunc > $O/big 2>&1\n");
    INFO(rig.logs());
    CHECK(rig.out("ls") == "0000:00:00.0\n0000:00:01.0\n");
    const std::string attrs = rig.out("attrs");
    INFO(attrs);
    CHECK(contains(attrs, "vendor=0x1b36\n"));
    CHECK(contains(attrs, "device=0x0005\n"));
    CHECK(contains(attrs, "class=0xff0000\n"));
    CHECK(contains(attrs, "revision=0x01\n"));
    CHECK(contains(attrs, "subsystem_vendor=0x1af4\n"));
    CHECK(contains(attrs, "subsystem_device=0x1100\n"));
    CHECK(contains(attrs, "irq=11\n"));
    CHECK(contains(attrs, "modalias=pci:v00001B36d00000005sv00001AF4sd00001100bcFFsc00i00\n"));
    CHECK(contains(attrs, "resource=0x00000000febf0000 0x00000000febf0fff 0x0000000000040200\n"
                          "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
                          "0x0000000800000000 0x00000008000fffff 0x000000000014220c\n"));
    const std::string nn = rig.out("nn");
    INFO(nn);
    CHECK(contains(nn, "00:00.0 "));
    CHECK(contains(nn, "00:01.0 "));
    CHECK(contains(nn, "[1b36:0005]"));
    CHECK(contains(nn, "Unassigned class [ff00]"));
    const std::string vvv = rig.out("vvv");
    INFO(vvv);
    CHECK(contains(vvv, "Subsystem: Red Hat, Inc. QEMU Virtual Machine [1af4:1100]"));
    CHECK(contains(vvv, "Region 0: Memory at febf0000 (32-bit, non-prefetchable) [disabled] [size=4K]"));
    CHECK(contains(vvv, "Region 2: Memory at 800000000 (64-bit, prefetchable) [disabled] [size=1M]"));
    CHECK(contains(vvv, "Expansion ROM at feb80000 [disabled] [size=64K]"));
    CHECK(contains(vvv, "Capabilities: [40] Power Management version 3"));
    CHECK(contains(vvv, "Capabilities: [50] MSI: Enable- Count=1/1 Maskable- 64bit+"));
    CHECK(contains(vvv, "Capabilities: [70] MSI-X: Enable- Count=8 Masked-"));
    CHECK(contains(vvv, "Capabilities: [80] Vital Product Data"));
    CHECK(contains(vvv, "Product Name: hvkit test device"));
    CHECK(contains(vvv, "Capabilities: [90] Vendor Specific Information: Len=0c"));
    // setpci: the command register is pciback's virtual copy; without permissive only
    // decoding, bus mastering and MWI reach the device, the read shows the guest's value.
    CHECK(rig.out("cmd0") == "0000\n");
    CHECK(rig.out("setcmd") == "0\n");
    CHECK(rig.out("cmd1") == "0546\n");
    // Read-only fields keep their value; a BAR takes no arbitrary address.
    CHECK(rig.out("ro") == "1b36\n0b\n");
    CHECK(rig.out("bar0") == "febf0000\n");
    CHECK(rig.out("ro_attr") != "0\n");
    // Refusals reach the tool as errnos: pciback's access_denied (MSI flags belong to the
    // enable_msi op) is EPERM, and the MSI flags keep their value; config ends at 256 bytes.
    const std::string msi = rig.out("msi");
    CHECK(contains(msi, "Operation not permitted"));
    CHECK(contains(msi, "\n0080\n"));
    CHECK(contains(rig.out("big"), "File too large"));
}

TEST_CASE("the sysfs tree follows PCI hot-plug in a running hv-guest domain", "[system][guest][pci][hotplug][root]") {
    Rig rig;
    // The script waits (bounded) for each change the test makes with hvctl.
    rig.start("'0001:00:02.0', '0001:00:03.0'",
              "ls $S/devices > $O/ls0; touch $O/ready0\n"
              "i=0; while [ -e $S/devices/0000:00:01.0 ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done\n"
              "ls $S/devices > $O/ls1; cat $S/devices/0000:00:01.0/vendor > $O/gone 2>&1; touch $O/ready1\n"
              "i=0; while [ ! -e $S/devices/0000:00:01.0 ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done\n"
              "ls $S/devices > $O/ls2; cat $S/devices/0000:00:01.0/vendor > $O/back\n"
              // The domain stays until pci-attach has seen the hot-plug through: if it ended as
              // soon as the device appeared, its bus could close before the backend reached
              // Connected again, and pci-attach would rightly report it incomplete.
              "i=0; while [ ! -e $O/attached ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done\n");
    INFO(rig.logs());
    REQUIRE(rig.reached("ready0"));
    CHECK(rig.out("ls0") == "0000:00:00.0\n0000:00:01.0\n");
    ProcResult r = rig.d.hvctl({"pci-detach", "pg", "0001:00:03.0"});
    INFO(r.err);
    REQUIRE(r.rc == 0);
    REQUIRE(rig.reached("ready1"));
    CHECK(rig.out("ls1") == "0000:00:00.0\n");
    CHECK(contains(rig.out("gone"), "No such file or directory"));
    r = rig.d.hvctl({"pci-attach", "pg", "0001:00:03.0"});
    INFO(r.err);
    CHECK(r.rc == 0);
    rig.signal("attached");
    rig.finish();
    CHECK(rig.out("ls2") == "0000:00:00.0\n0000:00:01.0\n");
    CHECK(rig.out("back") == "0x1b36\n");
}
