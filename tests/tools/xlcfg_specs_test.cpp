// Disk / vif / pci spec strings and vdev numbering (xen-vbd-interface).
#include <catch2/catch.hpp>

#include "xlcfg.hpp"

using namespace hv::tools;

namespace {

DiskSpec disk_ok(std::string_view s) {
    auto r = parse_disk_spec(s);
    if (!r) {
        FAIL("disk '" << s << "': " << r.error().text);
    }
    return *r;
}

std::string disk_err(std::string_view s) {
    auto r = parse_disk_spec(s);
    if (r) {
        FAIL("disk '" << s << "' parsed although it should not have");
    }
    CHECK(r.error().code == Errc::bad_disk);
    return r.error().text;
}

std::string vif_err(std::string_view s) {
    auto r = parse_vif_spec(s);
    if (r) {
        FAIL("vif '" << s << "' parsed although it should not have");
    }
    CHECK(r.error().code == Errc::bad_vif);
    return r.error().text;
}

std::string pci_err(std::string_view s) {
    auto r = parse_pci_spec(s);
    if (r) {
        FAIL("pci '" << s << "' parsed although it should not have");
    }
    CHECK(r.error().code == Errc::bad_pci);
    return r.error().text;
}

std::uint32_t vdev(std::string_view v) {
    auto r = vdev_to_number(v);
    if (!r) {
        FAIL("vdev '" << v << "': " << r.error().text);
    }
    return *r;
}

}  // namespace

TEST_CASE("vdev names encode as docs/misc/vbd-interface.txt says", "[tools][vdev]") {
    CHECK(vdev("xvda") == 51712);
    CHECK(vdev("xvda") == (202u << 8));
    CHECK(vdev("xvdb") == 51728);
    CHECK(vdev("xvda1") == 51713);
    CHECK(vdev("xvdp15") == ((202u << 8) | (15u << 4) | 15u));
    CHECK(vdev("xvdq") == ((1u << 28) | (16u << 8)));  // disk 16: the extended format
    CHECK(vdev("xvda16") == ((1u << 28) | 16u));       // partition 16 too
    CHECK(vdev("xvdz") == ((1u << 28) | (25u << 8)));
    CHECK(vdev("xvdaa") == ((1u << 28) | (26u << 8)));           // bijective base 26
    CHECK(vdev("xvdtq37") == ((1u << 28) | (536u << 8) | 37u));  // the doc's own example
    CHECK(vdev("d0") == 51712);
    CHECK(vdev("d0p0") == 51712);
    CHECK(vdev("d1p2") == ((202u << 8) | (1u << 4) | 2u));
    CHECK(vdev("d536p37") == ((1u << 28) | (536u << 8) | 37u));
    CHECK(vdev("hda") == 768);
    CHECK(vdev("hdb1") == ((3u << 8) | (1u << 6) | 1u));
    CHECK(vdev("hdc2") == ((22u << 8) | 2u));  // the doc's "IDE disk 2 partition 2"
    CHECK(vdev("hdd63") == ((22u << 8) | (1u << 6) | 63u));
    CHECK(vdev("sda") == 2048);
    CHECK(vdev("sdb3") == ((8u << 8) | (1u << 4) | 3u));  // the doc's "SCSI disk 1 partition 3"
    CHECK(vdev("sdp15") == ((8u << 8) | (15u << 4) | 15u));
    CHECK(vdev("51712") == 51712);
    CHECK(vdev("0xca00") == 51712);
    CHECK(vdev("0145000") == 51712);  // octal, as the doc allows
}

TEST_CASE("vdev names out of each format's range are refused", "[tools][vdev][hostile]") {
    for (const char* v :
         {"",    "xvd",   "xvd1",     "xvda0",      "xvda01", "xvda256",    "hde",  "hda64",
          "sdq", "sda16", "d1048576", "d0p256",     "dp1",    "d0p",        "xvdA", "vda",
          "0x",  "0xg",   "09",       "2147483648", "xvda 1", "xvdaaaaaaa", "-1"}) {
        INFO(v);
        auto r = vdev_to_number(v);
        CHECK_FALSE(r);
        if (!r) {
            CHECK(r.error().code == Errc::bad_disk);
        }
    }
    CHECK(vdev_to_number("xvda256").error().text ==
          "invalid vdev 'xvda256': partition must be 1..255 without leading zeros");
    CHECK(vdev_to_number("hde").error().text == "invalid vdev 'hde': disk index too large for hd");
}

TEST_CASE("keyword disk specs fill every field", "[tools][disk]") {
    const DiskSpec d = disk_ok("format=raw, vdev=xvda, access=rw, target=/var/img/a.img");
    CHECK(d.target == "/var/img/a.img");
    CHECK(d.format == DiskFormat::raw);
    CHECK(d.vdev == "xvda");
    CHECK(d.virtual_device == 51712);
    CHECK(d.readwrite);
    CHECK(std::string(d.mode()) == "w");
    CHECK(std::string(d.device_type()) == "disk");
    CHECK(d.backend.empty());
    CHECK(d.backendtype == DiskBackendType::unknown);

    const DiskSpec e = disk_ok(
        "vdev=xvdc,access=ro,backend=drv1,backendtype=phy,script=block-x,"
        "discard,direct-io-safe,untrusted,devtype=disk,specification=xen,"
        "target=/a,b:c,");
    CHECK(e.target == "/a,b:c");  // target= eats commas and colons; one trailing comma dropped
    CHECK_FALSE(e.readwrite);
    CHECK(e.backend == "drv1");
    CHECK(e.backendtype == DiskBackendType::phy);
    CHECK(e.script == "block-x");
    CHECK(e.discard == true);
    CHECK(e.direct_io_safe);
    CHECK(e.trusted == false);
    CHECK(disk_ok("vdev=xvda,no-discard,target=/x").discard == false);
    CHECK(disk_ok("vdev=xvda,trusted,target=/x").trusted == true);
    CHECK(disk_ok("format=qcow2,vdev=xvda,target=/x").format == DiskFormat::qcow2);
}

TEST_CASE("positional disk specs follow xl's order and deprecated prefixes", "[tools][disk]") {
    const DiskSpec lv = disk_ok("phy:/dev/vg0/lv1,xvda,w");
    CHECK(lv.target == "/dev/vg0/lv1");
    CHECK(lv.prefix == "phy");
    CHECK(lv.vdev == "xvda");
    CHECK(lv.readwrite);
    const DiskSpec f = disk_ok("file:/srv/b.img,xvdb,r");
    CHECK(f.target == "/srv/b.img");
    CHECK(f.prefix == "file");
    CHECK(f.virtual_device == 51728);
    CHECK_FALSE(f.readwrite);
    // Without a prefix the second positional is the format.
    const DiskSpec plain = disk_ok("/srv/c.img,raw,xvdc,rw");
    CHECK(plain.format == DiskFormat::raw);
    CHECK(plain.vdev == "xvdc");
    CHECK(disk_ok("/srv/c.img,,xvdc").format == DiskFormat::raw);  // empty format = raw
    CHECK(disk_ok("tap:aio:/srv/d.img,xvdd,w").prefix == "tap");
    CHECK(disk_ok("qcow2:/srv/e.qcow2,xvde,w").format == DiskFormat::qcow2);
    CHECK(disk_ok("nbd:host:1,xvdf,w").script == "block-nbd");
    // Access defaults to rw; `vdev:cdrom` marks a cdrom, which is always read-only.
    CHECK(disk_ok("phy:/dev/sdz,xvda").readwrite);
    const DiskSpec cd = disk_ok("file:/srv/x.iso,hdc:cdrom,r");
    CHECK(cd.is_cdrom);
    CHECK(cd.vdev == "hdc");
    CHECK_FALSE(cd.readwrite);
    const DiskSpec empty_cd = disk_ok(",hdc:cdrom,r");
    CHECK(empty_cd.is_cdrom);
    CHECK(empty_cd.format == DiskFormat::empty);
    CHECK(empty_cd.target.empty());
    CHECK(disk_ok("vdev=hdc,devtype=cdrom").format == DiskFormat::empty);
    CHECK(disk_ok("  phy:/dev/a ,  xvda,\tw").target == "/dev/a ");  // as xl: no trailing trim
}

TEST_CASE("every disk spec rejection has its reason", "[tools][disk][hostile]") {
    CHECK(disk_err("") == "no vdev specified");
    CHECK(disk_err("target=/x") == "no vdev specified");
    CHECK(disk_err("vdev=xvda") == "no target specified (and device not removable)");
    CHECK(disk_err(",raw,xvda") == "empty target is only allowed for a cdrom");
    CHECK(disk_err("/x,xvda,w") == "unknown value for format: 'xvda'");
    CHECK(disk_err("format=vmdk,vdev=xvda,target=/x") == "unknown value for format: 'vmdk'");
    CHECK(disk_err("format=raw,format=qcow2,vdev=xvda,target=/x") ==
          "format respecified (near 'qcow2')");
    CHECK(disk_err("vdev=xvda,vdev=xvdb,target=/x") == "vdev respecified (near 'xvdb')");
    CHECK(disk_err("phy:/a,xvda,w,extra") == "too many positional parameters (near 'extra')");
    CHECK(disk_err("phy:/a,xvda,x") == "unknown value for access: 'x' (use r, ro, w or rw)");
    CHECK(disk_err("vdev=xvda,access=rwx,target=/x") ==
          "unknown value for access: 'rwx' (use r, ro, w or rw)");
    CHECK(disk_err("vdev=xvda,devtype=floppy,target=/x") == "unknown value for devtype: 'floppy'");
    CHECK(disk_err("vdev=xvda,backendtype=nfs,target=/x") ==
          "unknown value for backendtype: 'nfs'");
    CHECK(disk_err("vdev=xvda,backendtype=phy,backendtype=tap,target=/x") ==
          "backendtype respecified (near 'tap')");
    CHECK(disk_err("vdev=xvda,specification=virtio,target=/x") ==
          "specification 'virtio' is not supported (only xen)");
    CHECK(disk_err("vdev=xvda,colo,target=/x") == "'colo' is not supported");
    CHECK(disk_err("vdev=xvda,colo-port=1,target=/x") == "'colo-port' is not supported");
    CHECK(disk_err("vdev=xvda,bogus=1,target=/x") == "unknown parameter 'bogus'");
    CHECK(disk_err("vdev=xvda,/p=1,target=/x") == "bad disk syntax near '/p=1'");
    CHECK(disk_err("vdev=xvda,=1,target=/x") == "bad disk syntax near '=1'");
    CHECK(disk_err("weird:/dev/a,xvda") == "unknown deprecated disk prefix 'weird:'");
    CHECK(disk_err("phy:/a,xvda:floppy") == "unknown deprecated type 'floppy'");
    CHECK(disk_err("phy:/a,xvdA") == "invalid vdev 'xvdA': no disk letter after xvd");
    CHECK(disk_err("vdev=xvda,backend=a,backend=b,target=/x") == "backend respecified (near 'b')");
    CHECK(disk_err("vdev=xvda,script=a,script=b,target=/x") == "script respecified (near 'b')");
    CHECK(disk_err("nbd:iscsi:/x,xvda") == "script respecified (near 'block-iscsi')");
    CHECK(disk_err("target=/a,target=/b") == "no vdev specified");  // target= eats the rest
    CHECK(disk_err(std::string_view("vdev=xvda,target=/a\0b", 21)) == "NUL byte in disk spec");
}

TEST_CASE("vif specs fill every field and normalise the mac", "[tools][vif]") {
    auto r = parse_vif_spec(
        " bridge=xenbr0, mac=00:16:3E:aa:bb:cc ,type=vif,model=e1000,"
        "script=vif-bridge,ip=10.0.0.2 10.0.0.3,backend=netdrv,vifname=v1,"
        "gatewaydev=eth0,rate=1GB/s,devid=7,mtu=9000,trusted");
    REQUIRE(r);
    CHECK(r->bridge == "xenbr0");
    CHECK(r->mac_string() == "00:16:3e:aa:bb:cc");
    CHECK(r->type == "vif");
    CHECK(r->model == "e1000");
    CHECK(r->script == "vif-bridge");
    CHECK(r->ip == "10.0.0.2 10.0.0.3");
    CHECK(r->backend == "netdrv");
    CHECK(r->vifname == "v1");
    CHECK(r->gatewaydev == "eth0");
    REQUIRE(r->rate);
    CHECK(r->rate->bytes_per_interval == 50000000);  // 1e9 B/s for 50 ms
    CHECK(r->rate->interval_usecs == 50000);
    CHECK(r->devid == 7u);
    CHECK(r->mtu == 9000u);
    CHECK(r->trusted == true);
    auto empty = parse_vif_spec("");
    REQUIRE(empty);
    CHECK(empty->mac_string().empty());
    CHECK_FALSE(empty->devid);
    CHECK(parse_vif_spec("untrusted")->trusted == false);
}

TEST_CASE("a DPDK vif spec names its vhost-user socket as the bridge", "[tools][vif]") {
    auto r = parse_vif_spec("bridge=/run/hvkit/vm1.sock, script=vif-dpdk, mac=00:16:3e:00:00:07");
    REQUIRE(r);
    CHECK(r->bridge == "/run/hvkit/vm1.sock");
    CHECK(r->script == "vif-dpdk");
}

TEST_CASE("type=ovs and type=openvswitch name an Open vSwitch bridge, alone or with its script",
          "[tools][vif][issue-5]") {
    for (const char* t : {"ovs", "openvswitch"}) {
        INFO(t);
        auto r = parse_vif_spec(std::string("bridge=ovsbr0,type=") + t);
        REQUIRE(r);
        CHECK(r->type == t);
        CHECK(r->is_ovs());
        CHECK(r->script.empty());
        auto s = parse_vif_spec(std::string("bridge=ovsbr0,script=vif-openvswitch,type=") + t);
        REQUIRE(s);
        CHECK(s->is_ovs());
        CHECK(s->script == "vif-openvswitch");
    }
    CHECK_FALSE(parse_vif_spec("type=vif")->is_ovs());
    CHECK_FALSE(parse_vif_spec("type=ioemu")->is_ovs());
    CHECK_FALSE(parse_vif_spec("script=vif-openvswitch")->is_ovs());
}

TEST_CASE("vif rates convert exactly as libxl does", "[tools][vif]") {
    struct Case {
        const char* rate;
        std::uint64_t bytes;
        std::uint32_t usecs;
    };
    const Case cases[] = {
        {"10Mb/s@20ms", 25000, 20000},
        {"10Mb/s", 62500, 50000},
        {"100MB/s@1s", 100000000, 1000000},
        {"5KB/s@250us", 1, 250},
        {"1B/s@1ms", 0, 1000},
        {"8b/s@2", 2, 2000000},
        {"3Gb/s@10m", 3750000, 10000},
        {"4294967295B/s@4294967295us", 18446744065119u, 4294967295u},
    };
    for (const Case& c : cases) {
        INFO(c.rate);
        auto r = parse_vif_rate(c.rate);
        REQUIRE(r);
        CHECK(r->bytes_per_interval == c.bytes);
        CHECK(r->interval_usecs == c.usecs);
    }
}

TEST_CASE("every vif rejection has its reason", "[tools][vif][hostile]") {
    CHECK(vif_err("mac=00:16:3e:00:00") == "invalid mac '00:16:3e:00:00' (use xx:xx:xx:xx:xx:xx)");
    CHECK(vif_err("mac=00-16-3e-00-00-01") ==
          "invalid mac '00-16-3e-00-00-01' (use xx:xx:xx:xx:xx:xx)");
    CHECK(vif_err("mac=01:16:3e:00:00:01") == "mac '01:16:3e:00:00:01' is a multicast address");
    CHECK(vif_err("bridge=") ==
          "invalid bridge '' (an interface name: 1-15 printable characters, no '/', ':' or "
          "space)");
    CHECK(vif_err("bridge=a/b").rfind("invalid bridge 'a/b'", 0) == 0);
    CHECK(vif_err("vifname=abcdefghijklmnop").rfind("invalid vifname", 0) == 0);
    CHECK(vif_err("gatewaydev=a b").rfind("invalid gatewaydev", 0) == 0);
    CHECK(vif_err("type=ovs2") == "invalid type 'ovs2' (use vif, ioemu, ovs or openvswitch)");
    CHECK(vif_err("type=OVS") == "invalid type 'OVS' (use vif, ioemu, ovs or openvswitch)");
    CHECK(vif_err("type=") == "invalid type '' (use vif, ioemu, ovs or openvswitch)");
    CHECK(vif_err("type=dpdk") == "invalid type 'dpdk' (use vif, ioemu, ovs or openvswitch)");
    CHECK(vif_err("bridge=ovsbr0,type=ovs,script=vif-bridge") ==
          "type=ovs conflicts with script=vif-bridge (Open vSwitch takes script=vif-openvswitch "
          "or none)");
    CHECK(vif_err("bridge=/run/x.sock,type=openvswitch,script=vif-dpdk") ==
          "type=openvswitch conflicts with script=vif-dpdk (Open vSwitch takes "
          "script=vif-openvswitch or none)");
    CHECK(vif_err("model=") == "empty value for 'model'");
    CHECK(vif_err("devid=65536") == "invalid devid '65536' (0..65535)");
    CHECK(vif_err("devid=x") == "invalid devid 'x' (0..65535)");
    CHECK(vif_err("mtu=67") == "invalid mtu '67' (68..65535)");
    CHECK(vif_err("accel=x") == "unknown parameter 'accel'");
    // DPDK vifs: a socket path goes with script=vif-dpdk and nothing else.
    CHECK(vif_err("bridge=/run/x.sock") ==
          "bridge '/run/x.sock' is a path: only a DPDK vif (script=vif-dpdk) takes a vhost-user "
          "socket");
    CHECK(vif_err("bridge=xenbr0,script=vif-dpdk") ==
          "script=vif-dpdk needs bridge=<vhost-user socket path> (absolute)");
    CHECK(vif_err("script=vif-dpdk") ==
          "script=vif-dpdk needs bridge=<vhost-user socket path> (absolute)");
    CHECK(vif_err("bridge=/run/a b.sock,script=vif-dpdk")
              .rfind("invalid bridge '/run/a b.sock'", 0) == 0);
    CHECK(vif_err("bridge=/" + std::string(107, 'x') + ",script=vif-dpdk")
              .rfind("invalid bridge '/xxx", 0) == 0);
    CHECK(vif_err("bridge=a,bridge=b") == "'bridge' given twice");
    CHECK(vif_err("promisc") == "unknown flag 'promisc' (expected key=value)");
    CHECK(vif_err("bridge=a\x01") == "control character in vif spec");
    CHECK(vif_err("rate=") == "no rate specified in rate ''");
    CHECK(vif_err("rate=10Mb") == "invalid rate (use N[GMK]B/s or N[GMK]b/s) in rate '10Mb'");
    CHECK(vif_err("rate=10mb/s") == "invalid rate (use N[GMK]B/s or N[GMK]b/s) in rate '10mb/s'");
    CHECK(vif_err("rate=@1s") == "no rate specified in rate '@1s'");
    CHECK(vif_err("rate=010B/s") == "leading zero (libxl would read octal) in rate '010B/s'");
    CHECK(vif_err("rate=1B/s@01s") == "leading zero (libxl would read octal) in rate '1B/s@01s'");
    CHECK(vif_err("rate=0B/s") == "zero rate in rate '0B/s'");
    CHECK(vif_err("rate=4294967296B/s") == "rate overflow in rate '4294967296B/s'");
    CHECK(vif_err("rate=1B/s@") ==
          "invalid replenishment interval (use N[s|ms|us]) in rate '1B/s@'");
    CHECK(vif_err("rate=1B/s@1h") ==
          "invalid replenishment interval (use N[s|ms|us]) in rate '1B/s@1h'");
    CHECK(vif_err("rate=1B/s@0ms") == "zero replenishment interval in rate '1B/s@0ms'");
    CHECK(vif_err("rate=1B/s@4295s") == "replenishment interval overflow in rate '1B/s@4295s'");
    CHECK(vif_err("rate=1B/s@4294967296us") ==
          "replenishment interval overflow in rate '1B/s@4294967296us'");
    CHECK(vif_err("rate=4294967295GB/s@4294s") == "rate overflow in rate '4294967295GB/s@4294s'");
}

TEST_CASE("pci specs take short and long BDFs, vslots and options", "[tools][pci]") {
    auto a = parse_pci_spec("03:1f.7");
    REQUIRE(a);
    CHECK(a->bdf() == "0000:03:1f.7");
    CHECK_FALSE(a->vslot);
    auto b = parse_pci_spec(
        "abcd:ff:00.0@1f,permissive=1,msitranslate=1,power_mgmt=0,seize=1,"
        "rdm_policy=relaxed");
    REQUIRE(b);
    CHECK(b->domain == 0xabcd);
    CHECK(b->bus == 0xff);
    CHECK(b->vslot == std::uint8_t{0x1f});
    CHECK(b->permissive);
    CHECK(b->msitranslate);
    CHECK_FALSE(b->power_mgmt);
    CHECK(b->seize);
    CHECK(b->rdm_policy == "relaxed");
    auto c = parse_pci_spec("0:2:3.*");
    REQUIRE(c);
    CHECK(c->all_functions);
    CHECK(c->bdf() == "0000:02:03.0");
    CHECK(c->backend.empty());
    auto d = parse_pci_spec("0001:00:02.0,backend=pcidd,seize=1");
    REQUIRE(d);
    CHECK(d->backend == "pcidd");
    CHECK(d->seize);
}

TEST_CASE("every pci rejection has its reason", "[tools][pci][hostile]") {
    CHECK(pci_err("") == "'' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(pci_err("03.0") == "'03.0' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(pci_err("03:00") == "'03:00' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(pci_err("03:20.0") == "invalid device '20' (hex 00..1f)");
    CHECK(pci_err("100:00.0") == "invalid bus '100' (hex 00..ff)");
    CHECK(pci_err("10000:00:00.0") == "invalid domain '10000' (hex 0..ffff)");
    CHECK(pci_err("1:2:3:00.0") == "invalid domain '1:2' (hex 0..ffff)");
    CHECK(pci_err("03:00.0@20") == "invalid virtual slot '20' (hex 0..1f)");
    CHECK(pci_err("03:00.x") == "invalid function 'x' (0..7 or *)");
    CHECK(pci_err("03:00.0,permissive") == "option 'permissive' is not key=value");
    CHECK(pci_err("03:00.0,permissive=2") == "option 'permissive' must be 0 or 1");
    CHECK(pci_err("03:00.0,seize=1,seize=0") == "option 'seize' given twice");
    CHECK(pci_err("03:00.0,rdm_policy=lax") == "rdm_policy must be strict or relaxed");
    CHECK(pci_err("03:00.0,colour=1") == "unknown option 'colour'");
    CHECK(pci_err("03:00.0,backend=") == "backend needs a domain name");
    CHECK(pci_err("03:00.0,backend=a,backend=b") == "option 'backend' given twice");
    CHECK(pci_err("03:00.0,") == "option '' is not key=value");
}
