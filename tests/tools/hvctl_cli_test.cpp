// hvctl's command line in-process: dispatch, help on every verb, usage errors (exit 2),
// failures (exit 1), dry-run create, list formatting and domain resolution. Talking to a
// real hv-min is covered by tests/system/tools_lifecycle_test.cpp.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "cli.hpp"
#include "devices.hpp"
#include "hvctl_run.hpp"
#include "temp_dir.hpp"

using namespace hv::tools;

namespace {

using Run = hv::test::HvctlRun;
using hv::test::hvctl;

bool starts_with(const std::string& s, std::string_view p) {
    return s.rfind(p, 0) == 0;
}

}  // namespace

TEST_CASE("hvctl without a verb prints usage and exits 2", "[tools][hvctl]") {
    const Run r = hvctl({});
    CHECK(r.rc == kExitUsage);
    CHECK(starts_with(r.err, "usage: hvctl [--rundir DIR] VERB [ARGS...]"));
    CHECK_FALSE(r.connected);
}

TEST_CASE("unknown verbs and global options are usage errors", "[tools][hvctl]") {
    const Run r = hvctl({"frobnicate"});
    CHECK(r.rc == kExitUsage);
    CHECK(starts_with(r.err, "hvctl: unknown verb 'frobnicate'\n"));
    const Run o = hvctl({"--bogus", "list"});
    CHECK(o.rc == kExitUsage);
    CHECK(starts_with(o.err, "hvctl: unknown option '--bogus'\n"));
    CHECK_FALSE(r.connected);
    CHECK_FALSE(o.connected);
}

TEST_CASE("help lists every verb with its summary", "[tools][hvctl]") {
    const Run r = hvctl({"help"});
    CHECK(r.rc == kExitOk);
    for (const Verb& v : verbs()) {
        CHECK(r.out.find("  " + std::string(v.name) + " ") != std::string::npos);
    }
    CHECK(r.out.find("pci-attach            Hot-plug a PCI device into a domain\n") !=
          std::string::npos);
    CHECK(r.out.find("not available") == std::string::npos);
    CHECK(r.out.find("block-attach          Attach a virtual block device\n") != std::string::npos);
    CHECK(r.out.find("Exit status: 0 success, 1 failure") != std::string::npos);
    CHECK(hvctl({"--help"}).out == r.out);
    CHECK(hvctl({"--version"}).out == "hvctl (hvkit) 0.1\n");
}

TEST_CASE("every verb answers --help, -h and help VERB with its usage", "[tools][hvctl]") {
    for (const Verb& v : verbs()) {
        INFO(v.name);
        const std::string usage = "usage: hvctl " + std::string(v.name);
        const Run a = hvctl({std::string(v.name), "--help"});
        CHECK(a.rc == kExitOk);
        CHECK(starts_with(a.out, usage));
        CHECK(a.out.find("Exit status:") != std::string::npos);
        const Run b = hvctl({"help", std::string(v.name)});
        CHECK(b.rc == kExitOk);
        CHECK(b.out == a.out);
        if (v.name != "help") {
            CHECK(hvctl({std::string(v.name), "-h"}).out == a.out);
        }
        CHECK_FALSE(a.connected);
    }
    const Run bad = hvctl({"help", "nope"});
    CHECK(bad.rc == kExitUsage);
    CHECK(starts_with(bad.err, "hvctl: help: unknown verb 'nope'"));
}

TEST_CASE("verb argument errors exit 2 with the verb's usage line", "[tools][hvctl]") {
    struct Case {
        std::vector<std::string> args;
        std::string err;
    };
    const Case cases[] = {
        {{"create"},
         "hvctl create: no domain file given\nusage: hvctl create [-n] [-q] [-c] [-e] CFG "
         "[KEY=VALUE...]\n"},
        {{"create", "-x", "f.cfg"},
         "hvctl create: unknown option '-x'\nusage: hvctl create [-n] [-q] [-c] [-e] CFG "
         "[KEY=VALUE...]\n"},
        {{"create", "f.cfg", "memory"},
         "hvctl create: 'memory' is not KEY=VALUE\nusage: hvctl create [-n] [-q] [-c] [-e] CFG "
         "[KEY=VALUE...]\n"},
        {{"destroy"}, "hvctl destroy: which domain?\nusage: hvctl destroy NAME|ID\n"},
        {{"destroy", "a", "b"},
         "hvctl destroy: too many arguments\nusage: hvctl destroy NAME|ID\n"},
        {{"destroy", "-f"}, "hvctl destroy: unknown option '-f'\nusage: hvctl destroy NAME|ID\n"},
        {{"list", "-x"}, "hvctl list: unknown option '-x'\nusage: hvctl list [-l] [NAME|ID...]\n"},
        {{"info", "x"}, "hvctl info: takes no arguments\nusage: hvctl info\n"},
        {{"block-attach", "g"},
         "hvctl block-attach: needs a domain and a disk spec\nusage: hvctl block-attach NAME|ID "
         "DISKSPEC\n"},
        {{"block-attach", "g", "vdev=xvdb, target=/x", "z"},
         "hvctl block-attach: too many arguments\nusage: hvctl block-attach NAME|ID DISKSPEC\n"},
        {{"block-attach", "-x", "vdev=xvdb, target=/x"},
         "hvctl block-attach: unknown option '-x'\nusage: hvctl block-attach NAME|ID DISKSPEC\n"},
        {{"block-attach", "g", "vdev=xvdb, access=maybe, target=/x"},
         "hvctl block-attach: bad disk spec 'vdev=xvdb, access=maybe, target=/x': "},
        {{"block-attach", "g", "format=raw, vdev=xvdb"},
         "hvctl block-attach: bad disk spec 'format=raw, vdev=xvdb': no target specified"},
        {{"block-attach", "g", "vdev=hdc, devtype=cdrom"},
         "hvctl block-attach: disk spec 'vdev=hdc, devtype=cdrom' names no target (empty cdrom "
         "drives are not supported)\nusage: hvctl block-attach NAME|ID DISKSPEC\n"},
        {{"block-detach", "g"},
         "hvctl block-detach: needs a domain and a vdev\nusage: hvctl block-detach [-f|--force] "
         "NAME|ID VDEV\n"},
        {{"block-detach", "g", "floppy9"}, "hvctl block-detach: bad vdev 'floppy9': "},
        {{"block-detach", "--now", "g", "xvdb"}, "hvctl block-detach: unknown option '--now'\n"},
        {{"block-list"}, "hvctl block-list: which domain?\nusage: hvctl block-list NAME|ID...\n"},
        {{"block-list", "g", "-l"}, "hvctl block-list: unknown option '-l'\n"},
        {{"network-attach", "g"},
         "hvctl network-attach: needs a domain and a vif spec\nusage: hvctl network-attach "
         "NAME|ID VIFSPEC\n"},
        {{"network-attach", "g", "bridge=br0, mac=00:16:3e:zz:00:01"},
         "hvctl network-attach: bad vif spec 'bridge=br0, mac=00:16:3e:zz:00:01': "},
        {{"network-attach", "g", "colour=blue"}, "hvctl network-attach: bad vif spec 'colour=blue': "},
        {{"network-detach", "g"},
         "hvctl network-detach: needs a domain and a devid or mac\nusage: hvctl network-detach "
         "[-f|--force] NAME|ID DEVID|MAC\n"},
        {{"network-detach", "g", "00:16:3e:00:00"},
         "hvctl network-detach: '00:16:3e:00:00' is neither a devid nor a mac address\n"},
        {{"network-detach", "g", "mac=00:16:3e:00:00:01,bridge=x"},
         "hvctl network-detach: 'mac=00:16:3e:00:00:01,bridge=x' is neither a devid nor a mac "
         "address\n"},
        {{"network-detach", "g", "0", "1"}, "hvctl network-detach: too many arguments\n"},
        {{"network-list"},
         "hvctl network-list: which domain?\nusage: hvctl network-list NAME|ID...\n"},
    };
    for (const Case& c : cases) {
        INFO(c.args[0]);
        const Run r = hvctl(c.args);
        CHECK(r.rc == kExitUsage);
        // A case whose expected text ends in a newline is the whole message; otherwise its
        // start (the parser's own wording follows).
        if (!c.err.empty() && c.err.back() == '\n' && c.err.find("usage:") != std::string::npos) {
            CHECK(r.err == c.err);
        } else {
            CHECK(starts_with(r.err, c.err));
        }
        CHECK_FALSE(r.connected);
    }
}

TEST_CASE("an unreachable hv-min is a failure (exit 1) naming the rundir", "[tools][hvctl]") {
    const std::vector<std::vector<std::string>> calls = {
        {"list"},
        {"info"},
        {"block-attach", "g", "format=raw, vdev=xvdb, access=rw, target=/x"},
        {"block-attach", "g", "phy:/dev/vg/lv,xvdc,w"},
        {"block-detach", "-f", "g", "xvdb"},
        {"block-list", "g"},
        {"network-attach", "g", "bridge=xenbr0, mac=00:16:3e:00:00:01, type=vif"},
        {"network-detach", "g", "00:16:3E:00:00:01"},
        {"network-detach", "g", "2"},
        {"network-list", "g", "h"}};
    for (const auto& v : calls) {
        INFO(v[0]);
        const Run r = hvctl(v);
        CHECK(r.rc == kExitFailure);
        CHECK(r.connected);
        CHECK(r.err.find("hvctl: cannot reach hv-min in /nonexistent/rundir: Connection refused") !=
              std::string::npos);
    }
    const Run d = hvctl({"--rundir", "/elsewhere", "destroy", "g"});
    CHECK(d.rc == kExitFailure);
    CHECK(d.err.find("cannot reach hv-min in /elsewhere") != std::string::npos);
    const Run e = hvctl({"--rundir=/x2", "list"});
    CHECK(e.err.find("cannot reach hv-min in /x2") != std::string::npos);
}

TEST_CASE("create -n parses the file and overrides without touching hv-min", "[tools][hvctl]") {
    hv::test::TempDir dir;
    const std::string cfg = (dir / "g.cfg").string();
    {
        std::ofstream f(cfg);
        f << "name = 'g1'\nmemory = 64\nkernel = '/usr/bin/env'\n"
             "cmdline = \"prog 'two words' a\\\\\\\\b\"\n"
             "disk = [ 'phy:/dev/vg/lv,xvda,w' ]\nvif = [ 'bridge=br0,rate=10Mb/s@20ms' ]\n";
    }
    const Run r = hvctl({"create", "-n", cfg, "memory=128"});
    CHECK(r.rc == kExitOk);
    CHECK_FALSE(r.connected);
    CHECK(r.err == "Parsing config from " + cfg + "\n");
    CHECK(r.out ==
          "name: g1\nmemory: 128 MiB (32768 pages)\nmaxmem: 128 MiB\nvcpus: 1\n"
          "kernel: /usr/bin/env\nargv: [/usr/bin/env] [prog] [two words] [a\\b]\ntrusted: 0\n"
          "driver_domain: 0\non_poweroff: destroy\non_reboot: restart\non_crash: destroy\n"
          "disk xvda (51712): target=/dev/vg/lv format=raw mode=w device-type=disk "
          "backend=Domain-0\n"
          "vif 0: bridge=br0 rate=25000,20000 backend=Domain-0\n");
}

TEST_CASE("create reports file errors as FILE:LINE and exits 1", "[tools][hvctl]") {
    hv::test::TempDir dir;
    const std::string cfg = (dir / "bad.cfg").string();
    {
        std::ofstream f(cfg);
        f << "name = 'g1'\nmemory = 64\nkernel = '/bin/true'\nvif = [ 'mac=nope' ]\n";
    }
    const Run r = hvctl({"create", "-q", cfg});
    CHECK(r.rc == kExitFailure);
    CHECK(r.err == cfg + ":4: vif 'mac=nope': invalid mac 'nope' (use xx:xx:xx:xx:xx:xx)\n");
    CHECK_FALSE(r.connected);
    const Run missing = hvctl({"create", (dir / "none.cfg").string()});
    CHECK(missing.rc == kExitFailure);
    CHECK(missing.err.find("none.cfg: No such file or directory") != std::string::npos);
}

TEST_CASE("create refuses what it cannot do before connecting", "[tools][hvctl]") {
    hv::test::TempDir dir;
    const std::string cfg = (dir / "d.cfg").string();
    {
        std::ofstream f(cfg);
        f << "name = 'g1'\nmemory = 64\nkernel = '/bin/true'\npci = [ '00:01.*' ]\n";
    }
    const Run dev = hvctl({"create", cfg});
    CHECK(dev.rc == kExitFailure);
    CHECK(dev.err.find(cfg + ": pci 0000:00:01.*: list each function (.F) by itself") !=
          std::string::npos);
    CHECK_FALSE(dev.connected);
    // A plain BDF gets as far as connecting (to check the device is assignable).
    const Run one = hvctl({"create", cfg, "pci=['00:01.0,permissive=1']"});
    CHECK(one.rc == kExitFailure);
    CHECK(one.connected);
    const Run quote = hvctl({"create", cfg, "pci=[]", "cmdline='a \"b'"});
    CHECK(quote.rc == kExitFailure);
    CHECK(quote.err.find(cfg + ": unterminated \" in cmdline") != std::string::npos);
    // With the devices removed, create gets as far as connecting.
    const Run ok = hvctl({"create", cfg, "pci=[]"});
    CHECK(ok.rc == kExitFailure);
    CHECK(ok.connected);
    CHECK(ok.err.find("warning:") == std::string::npos);
    const Run vcpus = hvctl({"create", "-q", cfg, "pci=[]", "vcpus=2"});
    CHECK(vcpus.connected);
    CHECK(starts_with(vcpus.err,
                      "warning: " + cfg + ": vcpus and maxmem are recorded but not enforced"));
}

TEST_CASE("the list table has xl's columns, Domain-0 first", "[tools][hvctl]") {
    const std::vector<DomainRow> rows = {
        {0, "Domain-0", 0, 'r', 1500000000, 1, 100, true, false},
        {7, "guest-with-a-name", 256 * 512, 'd', 42, 3, 200, false, true},
    };
    CHECK(format_list(rows) ==
          "Name                                        ID   Mem VCPUs     State    Time(s)\n"
          "Domain-0                                     0     0     1     r-----       1.5\n"
          "guest-with-a-name                            7   512     3     -----d       0.0\n");
    const std::string json = format_list_long(rows);
    CHECK(json.find("\"name\": \"guest-with-a-name\"") != std::string::npos);
    CHECK(json.find("\"memory_mib\": 512") != std::string::npos);
    CHECK(json.find("\"driver_domain\": true") != std::string::npos);
    CHECK(json.find("\"state\": \"-----d\"") != std::string::npos);
    const std::vector<DomainRow> odd = {{1, "q\"\\\x01", 0, 'r', 0, 1, 1, false, false}};
    CHECK(format_list_long(odd).find("\"name\": \"q\\\"\\\\\\u0001\"") != std::string::npos);
    CHECK(format_list_long({}) == "[\n]\n");
}

TEST_CASE("block-list and network-list print xl's tables with -1 for what is not published",
          "[tools][hvctl]") {
    const std::vector<BlockRow> vbds = {
        {51712, 0, 3, 4, 7, 8, "/local/domain/0/backend/vbd/3/51712"},
        {51728, 2, 3, 1, -1, -1, "/local/domain/2/backend/vbd/3/51728"},
    };
    CHECK(format_block_list(vbds) ==
          "Vdev  BE  handle state evt-ch ring-ref BE-path                       \n"
          "51712 0   3      4     7      8        /local/domain/0/backend/vbd/3/51712\n"
          "51728 2   3      1     -1     -1       /local/domain/2/backend/vbd/3/51728\n");
    CHECK(format_block_list({}) ==
          "Vdev  BE  handle state evt-ch ring-ref BE-path                       \n");
    const std::vector<NicRow> vifs = {
        {0, 0, "00:16:3e:01:02:03", 0, 4, 12, 20, 21, "/local/domain/0/backend/vif/3/0", ""},
        {1, 0, "00:16:3e:0a:0b:0c", 1, 1, -1, -1, -1, "/local/domain/0/backend/vif/3/1", ""},
    };
    CHECK(format_network_list(vifs) ==
          "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                       \n"
          "0   0  00:16:3e:01:02:03     0     4     12    20/21          /local/domain/0/backend/vif/3/0\n"
          "1   0  00:16:3e:0a:0b:0c     1     1     -1    -1/-1          /local/domain/0/backend/vif/3/1\n");
    // A DPDK vif's row ends with its socket.
    const std::vector<NicRow> dpdk = {
        {0, 0, "00:16:3e:01:02:03", 0, 4, 12, 20, 21, "/local/domain/0/backend/vif/3/0",
         "vhost-user:/run/hvkit/vm1.sock"},
    };
    CHECK(format_network_list(dpdk) ==
          "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path                       \n"
          "0   0  00:16:3e:01:02:03     0     4     12    20/21          /local/domain/0/backend/vif/3/0 vhost-user:/run/hvkit/vm1.sock\n");
}

TEST_CASE("a DPDK vif's script and socket reach the backend keys", "[tools][hvctl]") {
    auto r = parse_vif_spec("bridge=/run/hvkit/vm1.sock, script=vif-dpdk, mac=00:16:3e:00:00:07");
    REQUIRE(r);
    const DeviceReq d = vif_device(*r, 0);
    CHECK(d.backend_keys.at("script") == "vif-dpdk");
    CHECK(d.backend_keys.at("bridge") == "/run/hvkit/vm1.sock");
    // Without a script the toolstack's default stays vif-bridge.
    CHECK(vif_device(*parse_vif_spec("bridge=xenbr0"), 0).backend_keys.at("script") ==
          "vif-bridge");
}

TEST_CASE("a type=ovs vif writes its type and, without a script, vif-openvswitch",
          "[tools][hvctl][issue-5]") {
    const DeviceReq d = vif_device(*parse_vif_spec("bridge=ovsbr0, type=ovs"), 0);
    CHECK(d.backend_keys.at("type") == "ovs");
    CHECK(d.backend_keys.at("script") == "vif-openvswitch");
    CHECK(d.backend_keys.at("bridge") == "ovsbr0");
    const DeviceReq o = vif_device(*parse_vif_spec("bridge=ovsbr0, type=openvswitch"), 1);
    CHECK(o.backend_keys.at("type") == "openvswitch");
    CHECK(o.backend_keys.at("script") == "vif-openvswitch");
    // A script given with it is kept.
    const DeviceReq s =
        vif_device(*parse_vif_spec("bridge=ovsbr0, type=ovs, script=/etc/xen/vif-openvswitch"), 2);
    CHECK(s.backend_keys.at("script") == "/etc/xen/vif-openvswitch");
    // Other types keep vif-bridge and write what was given (vif by default).
    const DeviceReq v = vif_device(*parse_vif_spec("bridge=xenbr0"), 3);
    CHECK(v.backend_keys.at("type") == "vif");
    CHECK(v.backend_keys.at("script") == "vif-bridge");
    CHECK(vif_device(*parse_vif_spec("bridge=xenbr0, type=ioemu"), 4).backend_keys.at("type") ==
          "ioemu");
}

TEST_CASE("disk and vif specs become libxl's device keys", "[tools][hvctl]") {
    auto d = parse_disk_spec("phy:/dev/vg/lv,xvdc,r");
    REQUIRE(d);
    const DeviceReq v = disk_device(*d);
    CHECK(v.type == "vbd");
    CHECK(v.devid == 51744);
    CHECK(v.backend_keys.at("params") == "/dev/vg/lv");
    CHECK(v.backend_keys.at("mode") == "r");
    CHECK(v.backend_keys.at("dev") == "xvdc");
    CHECK(v.frontend_keys.at("virtual-device") == "51744");
    auto n = parse_vif_spec("bridge=br7, mac=00:16:3E:AA:bb:01, type=vif, backend=net");
    REQUIRE(n);
    const DeviceReq f = vif_device(*n, 5);
    CHECK(f.type == "vif");
    CHECK(f.devid == 5);
    CHECK(f.backend_domain == "net");
    CHECK(f.backend_keys.at("mac") == "00:16:3e:aa:bb:01");
    CHECK(f.frontend_keys.at("mac") == "00:16:3e:aa:bb:01");
    CHECK(f.backend_keys.at("bridge") == "br7");
    CHECK(f.backend_keys.at("handle") == "5");
    CHECK(f.frontend_keys.at("handle") == "5");
}

TEST_CASE("domains resolve by name or by numeric id", "[tools][hvctl]") {
    const std::vector<DomainRow> rows = {{0, "Domain-0"}, {3, "web"}, {12, "db"}};
    CHECK(resolve_domain(rows, "web")->domid == 3);
    CHECK(resolve_domain(rows, "12")->name == "db");
    CHECK(resolve_domain(rows, "0")->name == "Domain-0");
    CHECK(resolve_domain(rows, "4").error() == "no domain with id '4'");
    CHECK(resolve_domain(rows, "mail").error() == "no domain named 'mail'");
    CHECK_FALSE(resolve_domain(rows, "012"));
    CHECK_FALSE(resolve_domain(rows, "99999999999999999999"));
    CHECK_FALSE(resolve_domain(rows, ""));
}

TEST_CASE("cmdline splits like a shell word list", "[tools][hvctl]") {
    using V = std::vector<std::string>;
    CHECK(*split_cmdline("") == V{});
    CHECK(*split_cmdline("  a  b\tc\n") == V{"a", "b", "c"});
    CHECK(*split_cmdline("'x y' \"p \\\"q\\\" \\\\\" r\\ s") == V{"x y", "p \"q\" \\", "r s"});
    CHECK(*split_cmdline("a''b \"\"") == V{"ab", ""});
    CHECK(split_cmdline("'open").error() == "unterminated ' in cmdline");
    CHECK(split_cmdline("\"open").error() == "unterminated \" in cmdline");
    CHECK(split_cmdline("end\\").error() == "cmdline ends with a backslash");
}
