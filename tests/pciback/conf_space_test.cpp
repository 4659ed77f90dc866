// Config-space virtualisation (xen-abi.md §7.5) and the op dispatcher on the emulated model,
// without hv-min: what a frontend reads and what its writes reach on the device.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "pciback/conf_space.hpp"
#include "pciback/device.hpp"
#include "pciback/op.hpp"
#include "temp_dir.hpp"

using namespace hv;
using namespace hv::pci;
using namespace hv::rings;

namespace {

struct Dev {
    explicit Dev(bool permissive = false) {
        auto s = make_emulated_source(Bdf{1, 0, 2, 0}, "testdev", "");
        REQUIRE(s);
        src = std::move(*s);
        cs = std::make_unique<ConfigSpace>(*src, ConfigOptions{permissive});
    }
    std::uint32_t rd(unsigned off, unsigned size) {
        std::uint32_t v = 0;
        REQUIRE(cs->read(off, size, v) == XEN_PCI_ERR_success);
        return v;
    }
    std::int32_t wr(unsigned off, unsigned size, std::uint32_t v) { return cs->write(off, size, v); }
    std::uint32_t raw(unsigned off, unsigned size) {
        auto v = src->config_read(off, size);
        REQUIRE(v);
        return *v;
    }
    std::unique_ptr<DeviceSource> src;
    std::unique_ptr<ConfigSpace> cs;
};

/// One exported device at virtual 0000:00:00.0, for execute_op.
struct OneDevice : DeviceLookup, InterruptRouter {
    OneDevice() {
        auto s = make_emulated_source(Bdf{1, 0, 2, 0}, "testdev", "");
        REQUIRE(s);
        e.src = std::move(*s);
        e.cs = std::make_unique<ConfigSpace>(*e.src, ConfigOptions{});
    }
    Exported* find(std::uint32_t d, std::uint32_t b, std::uint32_t devfn) noexcept override {
        return d == 0 && b == 0 && devfn == 0 ? &e : nullptr;
    }
    Result<std::uint32_t> bind(Exported&, unsigned) override { return next_port++; }
    void release(Exported&) noexcept override { ++released; }
    xen_pci_op run(xen_pci_op op) {
        execute_op(op, *this, this);
        return op;
    }
    Exported e;
    std::uint32_t next_port = 10;
    int released = 0;
};

xen_pci_op op(std::uint32_t cmd, std::int32_t offset = 0, std::int32_t size = 4,
              std::uint32_t value = 0, std::uint32_t devfn = 0) {
    xen_pci_op o{};
    o.cmd = cmd;
    o.devfn = devfn;
    o.offset = offset;
    o.size = size;
    o.value = value;
    return o;
}

}  // namespace

TEST_CASE("BDFs parse in the dev-N, vdev-N and registry forms and reject anything else", "[pciback]") {
    auto a = parse_bdf("0001:00:02.0");
    REQUIRE(a);
    CHECK(a->domain == 1);
    CHECK(a->dev == 2);
    CHECK(to_string(*a) == "0001:00:02.0");
    CHECK(to_vdev_string(*a) == "0001:00:02.00");
    CHECK(registry_key(*a) == "0001-00-02-0");
    auto b = parse_bdf("0000:00:1f.07");
    REQUIRE(b);
    CHECK(b->fn == 7);
    auto c = parse_bdf("0000-03-00-1");
    REQUIRE(c);
    CHECK(c->bus == 3);
    CHECK(c->fn == 1);
    for (const char* bad : {"", "0000:00:20.0", "0000:00:00.8", "10000:00:00.0", "0:0:0", "0:0:0.0x",
                            "0000:100:00.0", "g:0:0.0", "0000:00:00.0.0"}) {
        INFO(bad);
        CHECK_FALSE(parse_bdf(bad));
    }
    CHECK_FALSE(parse_emulate("0001:00:02.0=nosuchmodel"));
    CHECK_FALSE(parse_emulate("0001:00:02.0"));
    CHECK(parse_emulate("0001:00:02.0=testdev"));
}

TEST_CASE("identity registers are read-only and read as the device's", "[pciback][conf]") {
    Dev d;
    CHECK(d.rd(0x00, 2) == 0x1b36);
    CHECK(d.rd(0x02, 2) == 0x0005);
    CHECK(d.rd(0x00, 4) == 0x00051b36);
    CHECK(d.rd(0x08, 4) == 0xff000001);
    CHECK(d.rd(0x3c, 1) == 11);
    CHECK(d.rd(0x3d, 1) == 1);
    for (unsigned off : {0x00U, 0x02U, 0x3cU, 0x3dU, 0x0dU, 0x08U, 0x2cU}) {
        const std::uint32_t before = d.raw(off & ~3U, 4);
        CHECK(d.wr(off, 1, 0x5a) == XEN_PCI_ERR_success);  // dropped, not an error
        CHECK(d.raw(off & ~3U, 4) == before);
    }
    CHECK(d.cs->dropped_writes() >= 2);  // class and subsystem: no field at all
}

TEST_CASE("the command register keeps a virtual copy and forwards only decoding and mastering", "[pciback][conf]") {
    Dev d;
    CHECK(d.rd(0x04, 2) == 0);
    CHECK(d.wr(0x04, 2, 0x0006) == XEN_PCI_ERR_success);  // MEM | MASTER
    CHECK(d.raw(0x04, 2) == 0x0006);
    CHECK(d.rd(0x04, 2) == 0x0006);
    CHECK(d.cs->memory_enabled());
    // INTX_DISABLE and SERR: virtual only without interrupt control.
    CHECK(d.wr(0x04, 2, 0x0506) == XEN_PCI_ERR_success);
    CHECK(d.raw(0x04, 2) == 0x0006);
    CHECK(d.rd(0x04, 2) == 0x0506);
    // Byte access to the high half changes only that byte of the virtual value.
    CHECK(d.wr(0x05, 1, 0x00) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x04, 2) == 0x0006);
}

TEST_CASE("BARs and the ROM read as the host gave them and answer sizing without reaching the device", "[pciback][conf]") {
    Dev d;
    CHECK(d.rd(0x10, 4) == 0xfebf0000);
    CHECK(d.rd(0x14, 4) == 0);  // not implemented
    CHECK(d.rd(0x18, 4) == 0x0000000c);
    CHECK(d.rd(0x1c, 4) == 0x8);
    CHECK(d.rd(0x30, 4) == 0xfeb80000);
    const std::uint32_t raw0 = d.raw(0x10, 4);

    CHECK(d.wr(0x10, 4, 0xffffffff) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x10, 4) == 0xfffff000);  // 4 KiB, 32-bit, non-prefetchable
    CHECK(d.raw(0x10, 4) == raw0);       // the device never saw it
    CHECK(d.wr(0x10, 4, 0xfebf0000) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x10, 4) == 0xfebf0000);

    CHECK(d.wr(0x18, 4, 0xffffffff) == XEN_PCI_ERR_success);
    CHECK(d.wr(0x1c, 4, 0xffffffff) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x18, 4) == 0xfff0000c);  // 1 MiB, 64-bit, prefetchable
    CHECK(d.rd(0x1c, 4) == 0xffffffff);
    // A write of another address disarms sizing and is not written.
    CHECK(d.wr(0x18, 4, 0x12345000) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x18, 4) == 0x0000000c);
    CHECK(d.wr(0x1c, 4, 0x0) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x1c, 4) == 0x8);

    CHECK(d.wr(0x30, 4, 0xfffff800) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x30, 4) == 0xffff0000);  // 64 KiB
    CHECK(d.wr(0x30, 4, 0xfeb80001) == XEN_PCI_ERR_success);  // enable: kept virtual
    CHECK(d.rd(0x30, 4) == 0xfeb80001);
    CHECK((d.raw(0x30, 4) & 1U) == 0);
    // An unimplemented BAR sizes to 0.
    CHECK(d.wr(0x14, 4, 0xffffffff) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x14, 4) == 0);
}

TEST_CASE("capabilities are listed unchanged with read-only headers and PM, VPD, MSI rules", "[pciback][conf]") {
    Dev d;
    CHECK(d.rd(0x06, 2) & 0x10);
    CHECK(d.rd(0x34, 1) == 0x40);
    CHECK(d.rd(0x40, 2) == 0x5001);      // PM, next MSI
    CHECK(d.rd(0x42, 2) == 0x0003);      // PME support hidden
    CHECK((d.raw(0x44, 2) & 0x0100) == 0);  // PME_En cleared at export
    CHECK(d.wr(0x40, 2, 0x0000) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x40, 2) == 0x5001);
    // PMCSR: the power state goes to the device; PME_En does not.
    CHECK(d.wr(0x44, 2, 0x0103) == XEN_PCI_ERR_success);
    CHECK((d.raw(0x44, 2) & 0x3) == 0x3);
    CHECK((d.raw(0x44, 2) & 0x0100) == 0);
    // MSI/MSI-X flags: guests use the ops.
    CHECK(d.cs->capability(0x05) == 0x50);
    CHECK(d.cs->capability(0x11) == 0x70);
    CHECK(d.wr(0x52, 2, 0x0001) == XEN_PCI_ERR_access_denied);
    CHECK(d.wr(0x72, 2, 0x8000) == XEN_PCI_ERR_access_denied);
    CHECK((d.raw(0x52, 2) & 1U) == 0);
    // MSI address: not virtualised: dropped.
    CHECK(d.wr(0x54, 4, 0xfee00000) == XEN_PCI_ERR_success);
    CHECK(d.raw(0x54, 4) == 0);
    // VPD: a read request works; a write request (flag set) is denied.
    CHECK(d.wr(0x82, 2, 0x0000) == XEN_PCI_ERR_success);
    CHECK((d.rd(0x82, 2) & 0x8000) != 0);
    CHECK((d.rd(0x84, 4) & 0xff) == 0x82);  // large resource: identifier string
    CHECK(d.wr(0x82, 2, 0x8004) == XEN_PCI_ERR_access_denied);
}

TEST_CASE("permissive mode writes unvirtualised fields and MSI flags through", "[pciback][conf]") {
    Dev d(true);
    CHECK(d.wr(0x54, 4, 0xfee00000) == XEN_PCI_ERR_success);
    CHECK(d.raw(0x54, 4) == 0xfee00000);
    CHECK(d.wr(0x52, 2, 0x0081) == XEN_PCI_ERR_success);
    CHECK((d.raw(0x52, 2) & 1U) == 1);
    CHECK(d.wr(0x04, 2, 0x0400) == XEN_PCI_ERR_success);  // INTX_DISABLE with control
    CHECK(d.raw(0x04, 2) == 0x0400);
    // Vendor stays read-only even so.
    CHECK(d.wr(0x00, 2, 0x1234) == XEN_PCI_ERR_success);
    CHECK(d.rd(0x00, 2) == 0x1b36);
}

TEST_CASE("a reset brings the device and its virtual registers back to the state at export", "[pciback][conf]") {
    Dev d;
    REQUIRE(d.wr(0x04, 2, 0x0006) == XEN_PCI_ERR_success);
    REQUIRE(d.wr(0x10, 4, 0xffffffff) == XEN_PCI_ERR_success);
    d.cs->reset();
    CHECK(d.rd(0x04, 2) == 0);
    CHECK(d.raw(0x04, 2) == 0);
    CHECK(d.rd(0x10, 4) == 0xfebf0000);
}

TEST_CASE("ops with a bad size, misaligned or out-of-range offset get invalid_offset", "[pciback][hostile]") {
    OneDevice dev;
    for (auto [off, size] : {std::pair{0, 3}, {1, 2}, {2, 4}, {-4, 4}, {4096, 4}, {0, 0}, {0, 8}, {256, 4},
                             {INT32_MIN, 1}, {0, INT32_MIN}}) {
        INFO(off << "/" << size);
        auto r = dev.run(op(XEN_PCI_OP_conf_read, off, size, 0xdead));
        CHECK(r.err == XEN_PCI_ERR_invalid_offset);
        CHECK(r.value == 0);
        CHECK(dev.run(op(XEN_PCI_OP_conf_write, off, size, 1)).err == XEN_PCI_ERR_invalid_offset);
    }
    CHECK(dev.e.counters.errors == 20);
}

TEST_CASE("unknown commands and unknown virtual devices are refused", "[pciback][hostile]") {
    OneDevice dev;
    CHECK(dev.run(op(XEN_PCI_OP_enable_multi_msi)).err == XEN_PCI_ERR_not_implemented);
    CHECK(dev.run(op(XEN_PCI_OP_aer_detected)).err == XEN_PCI_ERR_not_implemented);
    CHECK(dev.run(op(0xffffffffU)).err == XEN_PCI_ERR_not_implemented);
    CHECK(dev.run(op(XEN_PCI_OP_conf_read, 0, 2, 0, 8)).err == XEN_PCI_ERR_dev_not_found);
    auto o = op(XEN_PCI_OP_conf_read, 0, 2);
    o.domain = 1;
    CHECK(dev.run(o).err == XEN_PCI_ERR_dev_not_found);
    o.domain = 0;
    o.bus = 0xffffffff;
    CHECK(dev.run(o).err == XEN_PCI_ERR_dev_not_found);
}

TEST_CASE("MSI and MSI-X ops enforce exclusivity, decoding, entry bounds and the 128 limit", "[pciback][hostile]") {
    OneDevice dev;
    // MSI-X needs memory decoding.
    auto x = op(XEN_PCI_OP_enable_msix, 0, 0, 1);
    CHECK(dev.run(x).err == kENXIO);
    REQUIRE(dev.run(op(XEN_PCI_OP_conf_write, 0x04, 2, 0x2)).err == XEN_PCI_ERR_success);
    x.value = 129;
    CHECK(dev.run(x).err == kEINVAL);
    x.value = 1;
    x.msix_entries[0].entry = 8;  // the table has 8 entries
    CHECK(dev.run(x).err == kEINVAL);
    x.value = 2;
    x.msix_entries[0].entry = 3;
    x.msix_entries[1].entry = 3;  // duplicate
    CHECK(dev.run(x).err == kEINVAL);
    x.msix_entries[1].entry = 7;
    auto ok = dev.run(x);
    REQUIRE(ok.err == XEN_PCI_ERR_success);
    CHECK(ok.msix_entries[0].vector != 0);
    CHECK(ok.msix_entries[1].vector != ok.msix_entries[0].vector);
    CHECK((dev.e.src->config_read(0x72, 2).value() & 0x8000) != 0);
    CHECK(dev.run(x).err == kEALREADY);
    CHECK(dev.run(op(XEN_PCI_OP_enable_msi)).err == XEN_PCI_ERR_op_failed);  // MSI-X active
    CHECK(dev.run(op(XEN_PCI_OP_disable_msix)).err == XEN_PCI_ERR_success);
    CHECK((dev.e.src->config_read(0x72, 2).value() & 0x8000) == 0);
    auto m = dev.run(op(XEN_PCI_OP_enable_msi));
    REQUIRE(m.err == XEN_PCI_ERR_success);
    CHECK(m.value != 0);
    CHECK((dev.e.src->config_read(0x52, 2).value() & 1) == 1);
    CHECK(dev.run(op(XEN_PCI_OP_enable_msi)).err == XEN_PCI_ERR_op_failed);  // already
    x.value = 1;
    CHECK(dev.run(x).err == kENXIO);  // MSI active
    CHECK(dev.run(op(XEN_PCI_OP_disable_msi)).err == XEN_PCI_ERR_success);
    CHECK(dev.released == 2);
}

TEST_CASE("a host device is read through its sysfs config file and resource table", "[pciback][sysfs]") {
    // A fake sysfs tree (a test never writes a real device's config space).
    hv::test::TempDir dir("pciback-sysfs");
    const auto dev = dir.path() / "0000:00:05.0";
    std::filesystem::create_directories(dev);
    std::array<std::uint8_t, 256> cfg{};
    cfg[0] = 0xf4; cfg[1] = 0x1a; cfg[2] = 0x00; cfg[3] = 0x10;  // 1af4:1000
    cfg[0x10] = 0x01; cfg[0x11] = 0xc0;                           // I/O BAR at 0xc000
    cfg[0x14] = 0x00; cfg[0x15] = 0x10; cfg[0x16] = 0xbf; cfg[0x17] = 0xfe;  // MMIO 0xfebf1000
    std::ofstream(dev / "config", std::ios::binary).write(reinterpret_cast<const char*>(cfg.data()), 256);
    {
        std::ofstream r(dev / "resource");
        r << "0x000000000000c000 0x000000000000c01f 0x0000000000040101\n"
             "0x00000000febf1000 0x00000000febf1fff 0x0000000000040200\n";
        for (int i = 0; i < 5; ++i) {
            r << "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
        }
    }
    auto s = make_sysfs_source(Bdf{0, 0, 5, 0}, dir.path());
    REQUIRE(s);
    ConfigSpace cs(**s, {});
    std::uint32_t v = 0;
    REQUIRE(cs.read(0, 4, v) == XEN_PCI_ERR_success);
    CHECK(v == 0x10001af4);
    REQUIRE(cs.read(0x10, 4, v) == XEN_PCI_ERR_success);
    CHECK(v == 0xc001);
    REQUIRE(cs.write(0x10, 4, 0xffffffff) == XEN_PCI_ERR_success);
    REQUIRE(cs.read(0x10, 4, v) == XEN_PCI_ERR_success);
    CHECK(v == 0xffe1);  // 32 ports
    REQUIRE(cs.write(0x14, 4, 0xffffffff) == XEN_PCI_ERR_success);
    REQUIRE(cs.read(0x14, 4, v) == XEN_PCI_ERR_success);
    CHECK(v == 0xfffff000);
    CHECK_FALSE(make_sysfs_source(Bdf{0, 0, 6, 0}, dir.path()));
}

TEST_CASE("a real host device's config space reads through sysfs as lspci sees it", "[pciback][sysfs]") {
    // Read-only: the first device on this machine; its vendor file is the reference.
    const std::filesystem::path root = "/sys/bus/pci/devices";
    std::error_code ec;
    if (!std::filesystem::exists(root, ec)) {
        WARN("no PCI bus in sysfs");
        return;
    }
    for (const auto& ent : std::filesystem::directory_iterator(root)) {
        auto bdf = parse_bdf(ent.path().filename().string());
        REQUIRE(bdf);
        std::ifstream vf(ent.path() / "vendor");
        unsigned vendor = 0;
        vf >> std::hex >> vendor;
        // The source only: building a ConfigSpace may write (PME_En is cleared at export).
        auto s = make_sysfs_source(*bdf, root);
        REQUIRE(s);
        auto v = (*s)->config_read(0, 2);
        REQUIRE(v);
        CHECK(*v == vendor);
        CHECK((*s)->config_size() >= 256);
        return;
    }
}
