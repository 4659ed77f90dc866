// Differential tests: our parsers against Xen 4.17's own libxlutil (the parser inside `xl`),
// linked from Debian's libxen-dev. Where we are deliberately stricter, the case is listed
// as such and only our rejection is checked.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

extern "C" {
#include <libxl.h>
#include <libxlutil.h>
}

#include "xlcfg.hpp"

using namespace hv::tools;

namespace {

/// An XLU_Config whose complaints go to /dev/null.
class Xlu {
public:
    Xlu() : report_(std::fopen("/dev/null", "w")), cfg_(xlu_cfg_init(report_, "oracle")) {}
    ~Xlu() {
        xlu_cfg_destroy(cfg_);
        std::fclose(report_);
    }
    Xlu(const Xlu&) = delete;
    Xlu& operator=(const Xlu&) = delete;
    XLU_Config* get() { return cfg_; }

private:
    FILE* report_;
    XLU_Config* cfg_;
};

std::string str(const char* s) {
    return s == nullptr ? std::string() : std::string(s);
}

}  // namespace

TEST_CASE("config files xl accepts parse to the same keys and values", "[tools][xlcfg][oracle]") {
    const char* const texts[] = {
        "name = \"a\"\nmemory = 512\n",
        "a='x';b=\"y\" ; c = 0x1f\n",
        "l = [ 'a', \"b\",\n  'c', ]\n# comment\n",
        "l = [ # c1\n 'a', # c2\n 'b' ]\n",
        "s = \"q\\\"\\'\\\\\\n\\t\\r\"\n",
        "e = []\nf = [ '' ]\n",
        "x = 'a'\nx += 'b'\nl = ['1']\nl += ['2']\n",
        "\n\n;;\nk = 1\n",
        "a.b = 'dotted'\nunder_score = 2\n",
    };
    for (const char* t : texts) {
        INFO(t);
        Xlu x;
        REQUIRE(xlu_cfg_readdata(x.get(), t, static_cast<int>(std::strlen(t))) == 0);
        auto ours = parse_cfg_syntax(t, "t");
        REQUIRE(ours);
        for (const CfgSetting& s : *ours) {
            INFO(s.key);
            if (s.value.kind == CfgValue::Kind::list) {
                XLU_ConfigList* list = nullptr;
                int n = 0;
                REQUIRE(xlu_cfg_get_list(x.get(), s.key.c_str(), &list, &n, 1) == 0);
                REQUIRE(static_cast<std::size_t>(n) == s.value.items.size());
                for (int i = 0; i < n; ++i) {
                    CHECK(str(xlu_cfg_get_listitem(list, i)) ==
                          s.value.items[static_cast<std::size_t>(i)].text);
                }
            } else {
                const char* v = nullptr;
                REQUIRE(xlu_cfg_get_string(x.get(), s.key.c_str(), &v, 1) == 0);
                CHECK(str(v) == s.value.text);
            }
        }
    }
}

TEST_CASE("config files xl rejects are rejected by us too", "[tools][xlcfg][oracle][hostile]") {
    const char* const texts[] = {
        "a = \"abc\n",   "a = 'abc",      "a = [1, 2\n",     "a = [ , ]\n",
        "a = 'x' 'y'\n", "a\n",           "= 1\n",           "a = -1\n",
        "a = 1.5\n",     "a = \"\\q\"\n", "a =\n1\n",        "a='x'\na+=['y']\n",
        "a = [1 2]\n",   "a-b = 1\n",     "a = 'x' b = 2\n", "a = '\\0'\n",
    };
    for (const char* t : texts) {
        INFO(t);
        Xlu x;
        CHECK(xlu_cfg_readdata(x.get(), t, static_cast<int>(std::strlen(t))) != 0);
        CHECK_FALSE(parse_cfg_syntax(t, "t"));
    }
}

TEST_CASE("where we are stricter than xl we say so instead of guessing", "[tools][xlcfg][oracle]") {
    // xl keeps the last of two assignments, reads 010 as octal and nested lists as null
    // items; we refuse all three.
    const char* const texts[] = {"a = 1\na = 2\n", "a = [ [1] ]\n"};
    for (const char* t : texts) {
        INFO(t);
        Xlu x;
        CHECK(xlu_cfg_readdata(x.get(), t, static_cast<int>(std::strlen(t))) == 0);
        CHECK_FALSE(parse_cfg_syntax(t, "t"));
    }
    CHECK_FALSE(parse_domain_config("name='a'\nkernel='/k'\nmemory=010\n", "t"));
}

namespace {

DiskFormat from_libxl(libxl_disk_format f) {
    switch (f) {
        case LIBXL_DISK_FORMAT_QCOW:
            return DiskFormat::qcow;
        case LIBXL_DISK_FORMAT_QCOW2:
            return DiskFormat::qcow2;
        case LIBXL_DISK_FORMAT_VHD:
            return DiskFormat::vhd;
        case LIBXL_DISK_FORMAT_EMPTY:
            return DiskFormat::empty;
        case LIBXL_DISK_FORMAT_QED:
            return DiskFormat::qed;
        default:
            return DiskFormat::raw;
    }
}

DiskBackendType from_libxl(libxl_disk_backend b) {
    switch (b) {
        case LIBXL_DISK_BACKEND_PHY:
            return DiskBackendType::phy;
        case LIBXL_DISK_BACKEND_TAP:
            return DiskBackendType::tap;
        case LIBXL_DISK_BACKEND_QDISK:
            return DiskBackendType::qdisk;
        case LIBXL_DISK_BACKEND_STANDALONE:
            return DiskBackendType::standalone;
        default:
            return DiskBackendType::unknown;
    }
}

}  // namespace

TEST_CASE("disk specs parse exactly as xlu_disk_parse does", "[tools][disk][oracle]") {
    const char* const specs[] = {
        "format=raw, vdev=xvda, access=rw, target=/var/img/a.img",
        "phy:/dev/vg0/lv,xvda,w",
        "file:/srv/b.img,xvdb,r",
        "/srv/c.img,raw,xvdc,rw",
        "/srv/c.img,,xvdc",
        "tap:aio:/srv/d.img,xvdd,w",
        "tap2:tapdisk:aio:/x,xvde",
        "qcow2:/srv/e.qcow2,xvde,w",
        "vhd:/srv/e.vhd,xvdf,ro",
        "nbd:host:1,xvdf,w",
        "iscsi:iqn.x,xvdg",
        "file:/srv/x.iso,hdc:cdrom,r",
        ",hdc:cdrom,r",
        "vdev=hdc,devtype=cdrom",
        "vdev=hdc,cdrom",
        "vdev=xvdc,access=ro,backend=drv1,backendtype=phy,script=block-x,discard,"
        "direct-io-safe,devtype=disk,target=/a,b:c,",
        "vdev=xvda,no-discard,target=/x",
        "  phy:/dev/a ,  xvda,\tw",
        "format=qcow,vdev=sdb3,target=/q",
        "backendtype=qdisk,vdev=d1p2,target=/q",
        "backendtype=standalone,vdev=51712,target=/q",
        "/a,qed,hda,r",
        "phy:/dev/loop0,xvdtq37,w",
    };
    for (const char* spec : specs) {
        INFO(spec);
        Xlu x;
        libxl_device_disk disk;
        libxl_device_disk_init(&disk);
        const int rc = xlu_disk_parse(x.get(), 1, &spec, &disk);
        auto ours = parse_disk_spec(spec);
        CHECK(rc == 0);
        REQUIRE(ours);
        if (rc == 0) {
            CHECK(str(disk.pdev_path) == ours->target);
            CHECK(str(disk.vdev) == ours->vdev);
            CHECK(from_libxl(disk.format) == ours->format);
            CHECK(from_libxl(disk.backend) == ours->backendtype);
            CHECK(str(disk.script) == ours->script);
            CHECK(str(disk.backend_domname) == ours->backend);
            CHECK((disk.readwrite != 0) == ours->readwrite);
            CHECK((disk.is_cdrom != 0) == ours->is_cdrom);
            CHECK(disk.direct_io_safe == ours->direct_io_safe);
            if (libxl_defbool_is_default(disk.discard_enable)) {
                CHECK_FALSE(ours->discard.has_value());
            } else {
                CHECK(ours->discard == libxl_defbool_val(disk.discard_enable));
            }
        }
        libxl_device_disk_dispose(&disk);
    }
}

TEST_CASE("disk specs xl rejects are rejected by us too", "[tools][disk][oracle][hostile]") {
    const char* const specs[] = {
        "",
        "target=/x",
        "vdev=xvda",
        "/x,xvda,w",
        "format=vmdk,vdev=xvda,target=/x",
        "format=raw,format=qcow2,vdev=xvda,target=/x",
        "vdev=xvda,vdev=xvdb,target=/x",
        "phy:/a,xvda,w,extra",
        "phy:/a,xvda,x",
        "vdev=xvda,devtype=floppy,target=/x",
        "vdev=xvda,backendtype=nfs,target=/x",
        "vdev=xvda,bogus=1,target=/x",
        "weird:/dev/a,xvda",
        "phy:/a,xvda:floppy",
        "vdev=xvda,script=a,script=b,target=/x",
    };
    for (const char* spec : specs) {
        INFO(spec);
        Xlu x;
        libxl_device_disk disk;
        libxl_device_disk_init(&disk);
        CHECK(xlu_disk_parse(x.get(), 1, &spec, &disk) != 0);
        CHECK_FALSE(parse_disk_spec(spec));
        libxl_device_disk_dispose(&disk);
    }
}

TEST_CASE("random vif rates convert exactly as xlu_vif_parse_rate", "[tools][vif][oracle]") {
    const auto seed = std::random_device{}();
    INFO("seed " << seed);
    std::printf("vif rate oracle seed %u\n", seed);
    std::mt19937 rng(seed);
    const char* const units[] = {"B/s",  "b/s",  "KB/s", "Kb/s", "MB/s", "Mb/s",
                                 "GB/s", "Gb/s", "kB/s", "B",    "/s",   "MB/S"};
    const char* const iunits[] = {"", "s", "ms", "us", "m", "u", "ns", "sec", "S"};
    auto number = [&]() -> std::string {
        switch (rng() % 4) {
            case 0:
                return std::to_string(rng() % 10);
            case 1:
                return std::to_string(1 + rng() % 100000);
            case 2:
                return std::to_string(static_cast<std::uint64_t>(rng()) * 3);  // may overflow
            default:
                return std::to_string(1 + rng() % 5000);
        }
    };
    int compared = 0;
    for (int i = 0; i < 3000; ++i) {
        std::string rate = number() + units[rng() % std::size(units)];
        if (rng() % 3 != 0) {
            rate += "@" + number() + iunits[rng() % std::size(iunits)];
        }
        INFO(rate);
        Xlu x;
        libxl_device_nic nic;
        libxl_device_nic_init(&nic);
        const int rc = xlu_vif_parse_rate(x.get(), rate.c_str(), &nic);
        auto ours = parse_vif_rate(rate);
        CHECK((rc == 0) == ours.has_value());
        if (rc == 0 && ours) {
            CHECK(nic.rate_bytes_per_interval == ours->bytes_per_interval);
            CHECK(nic.rate_interval_usecs == ours->interval_usecs);
            ++compared;
        }
        libxl_device_nic_dispose(&nic);
    }
    CHECK(compared > 500);
}

TEST_CASE("pci specs parse to the same device as xlu_pci_parse_spec_string",
          "[tools][pci][oracle]") {
    const char* const specs[] = {
        "03:00.0",
        "0000:03:1f.7",
        "abcd:ff:00.0@1f",
        "0:2:3.1,permissive=1",
        "01:00.0,msitranslate=1,power_mgmt=1,seize=1",
        "02:00.0,rdm_policy=strict",
        "04:01.2@3,permissive=0",
    };
    for (const char* spec : specs) {
        INFO(spec);
        Xlu x;
        libxl_device_pci pci;
        libxl_device_pci_init(&pci);
        const int rc = xlu_pci_parse_spec_string(x.get(), &pci, spec);
        auto ours = parse_pci_spec(spec);
        CHECK(rc == 0);
        REQUIRE(ours);
        if (rc == 0) {
            CHECK(pci.domain == ours->domain);
            CHECK(pci.bus == ours->bus);
            CHECK(pci.dev == ours->dev);
            CHECK(pci.func == ours->func);
            CHECK(pci.vdevfn == (ours->vslot ? static_cast<unsigned>(*ours->vslot) << 3 : 0u));
            CHECK(pci.permissive == ours->permissive);
            CHECK(pci.msitranslate == ours->msitranslate);
            CHECK(pci.power_mgmt == ours->power_mgmt);
            CHECK(pci.seize == ours->seize);
        }
        libxl_device_pci_dispose(&pci);
    }
}
