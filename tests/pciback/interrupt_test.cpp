// The emulated model's interrupts (pciback/README.md "testdev: raising interrupts"): the
// vendor-specific trigger register raises an MSI-X entry, the MSI vector or INTx, honouring
// enable and mask bits and the PBA; out-of-range triggers are counted and dropped. First the
// model alone (raw registers and BAR0 memory), then end to end: a guest enables MSI-X/MSI
// through libpcifront and receives the vector on the event channel pciback bound.
#include <poll.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "pciback/source.hpp"

using namespace hv;
using namespace hv::pci;
using namespace hv::pci::test;

namespace {

constexpr unsigned kVendorCap = 0x90, kTrigger = 0x94, kIgnored = 0x98;
constexpr unsigned kMsiCtl = 0x52, kMsixCtl = 0x72;

struct Model {
    Model() {
        auto s = make_emulated_source(Bdf{1, 0, 2, 0}, "testdev", "");
        REQUIRE(s);
        src = std::move(*s);
    }
    std::uint32_t rd(unsigned off, unsigned size) { return src->config_read(off, size).value(); }
    void wr(unsigned off, unsigned size, std::uint32_t v) { REQUIRE(src->config_write(off, size, v)); }
    bool irq_ready() {
        pollfd p{src->interrupt_fd(), POLLIN, 0};
        return ::poll(&p, 1, 0) == 1;
    }
    std::uint64_t pba() {
        std::uint64_t v = 0;
        REQUIRE(::pread(src->bar_fd(0), &v, sizeof v, 0xc00) == sizeof v);
        return v;
    }
    void set_entry_mask(unsigned n, bool masked) {
        const std::uint32_t ctl = masked ? 1 : 0;
        REQUIRE(::pwrite(src->bar_fd(0), &ctl, sizeof ctl, 0x800 + 16 * n + 12) == sizeof ctl);
    }
    std::unique_ptr<DeviceSource> src;
};

}  // namespace

TEST_CASE("testdev: the vendor capability is on the list and reads as documented", "[pciback][irq]") {
    Model m;
    CHECK(m.rd(0x81, 1) == kVendorCap);  // VPD → vendor-specific
    CHECK(m.rd(kVendorCap, 1) == 0x09);
    CHECK(m.rd(kVendorCap + 1, 1) == 0x00);
    CHECK(m.rd(kVendorCap + 2, 1) == 12);
    m.wr(kTrigger, 1, 0);  // INTx mode, INTx enabled: asserted
    CHECK(m.rd(kTrigger, 1) == 0);  // write-only
    m.wr(kIgnored, 4, 0x12345678);
    CHECK(m.rd(kIgnored, 4) == 0);  // read-only
}

TEST_CASE("testdev: INTx when neither MSI nor MSI-X is on, honouring INTx Disable", "[pciback][irq]") {
    Model m;
    m.wr(kTrigger, 1, 0);
    CHECK((m.rd(0x06, 2) & 0x08) != 0);  // Interrupt Status
    REQUIRE(m.irq_ready());
    CHECK(m.src->take_interrupts() == (1ULL << 63));
    CHECK_FALSE(m.irq_ready());
    m.wr(kTrigger, 1, 0xff);  // deassert
    CHECK((m.rd(0x06, 2) & 0x08) == 0);
    m.wr(0x04, 2, 0x0400);    // INTx Disable: status only
    m.wr(kTrigger, 1, 0);
    CHECK((m.rd(0x06, 2) & 0x08) != 0);
    CHECK_FALSE(m.irq_ready());
    CHECK(m.src->take_interrupts() == 0);
    m.wr(kTrigger, 1, 5);  // INTx has one "vector": 0
    CHECK(m.rd(kIgnored, 4) == 1);
}

TEST_CASE("testdev: MSI-X entry and function masks hold a vector in the PBA until unmasked", "[pciback][irq]") {
    Model m;
    m.wr(kMsixCtl, 2, 0x8000);  // enable
    m.wr(kTrigger, 1, 3);
    REQUIRE(m.irq_ready());
    CHECK(m.src->take_interrupts() == (1ULL << 3));

    SECTION("entry mask (table in BAR0)") {
        m.set_entry_mask(5, true);
        m.wr(kTrigger, 1, 5);
        CHECK_FALSE(m.irq_ready());
        CHECK(m.pba() == (1ULL << 5));
        m.set_entry_mask(5, false);
        m.wr(kTrigger, 1, 1);  // the model notices the unmask at its next register write
        REQUIRE(m.irq_ready());
        CHECK(m.src->take_interrupts() == ((1ULL << 5) | (1ULL << 1)));
        CHECK(m.pba() == 0);
    }
    SECTION("function mask (MSI-X control)") {
        m.wr(kMsixCtl, 2, 0xc000);
        m.wr(kTrigger, 1, 2);
        m.wr(kTrigger, 1, 7);
        CHECK_FALSE(m.irq_ready());
        CHECK(m.pba() == ((1ULL << 2) | (1ULL << 7)));
        m.wr(kMsixCtl, 2, 0x8000);  // unmask: both fire at once
        REQUIRE(m.irq_ready());
        CHECK(m.src->take_interrupts() == ((1ULL << 2) | (1ULL << 7)));
        CHECK(m.pba() == 0);
    }
    SECTION("out of range: counted and dropped") {
        m.wr(kTrigger, 1, 8);
        m.wr(kTrigger, 1, 0xfe);
        CHECK_FALSE(m.irq_ready());
        CHECK(m.rd(kIgnored, 4) == 2);
        CHECK(m.pba() == 0);
    }
    SECTION("a reset forgets pending vectors and masks") {
        m.wr(kMsixCtl, 2, 0xc000);
        m.wr(kTrigger, 1, 4);
        REQUIRE(m.src->reset());
        CHECK(m.pba() == 0);
        CHECK(m.rd(kMsixCtl, 2) == 0x0007);
        CHECK(m.src->take_interrupts() == 0);
    }
}

TEST_CASE("testdev: MSI raises vector 0 only", "[pciback][irq]") {
    Model m;
    m.wr(kMsiCtl, 2, 0x0001);
    m.wr(kTrigger, 1, 0);
    REQUIRE(m.irq_ready());
    CHECK(m.src->take_interrupts() == 1);
    m.wr(kTrigger, 1, 1);
    CHECK_FALSE(m.irq_ready());
    CHECK(m.rd(kIgnored, 4) == 1);
}

namespace {

bool fires(const hvmin::EventChannelBinding& b, std::chrono::milliseconds t) { return static_cast<bool>(b.wait(t)); }
/// A fresh interdomain binding starts pending (Xen marks it so at bind): consume that.
void settle(hvmin::EventChannelBinding& b) { (void)b.ack(); }

}  // namespace

TEST_CASE("a guest triggers MSI-X vectors and MSI and receives them on its event channels", "[pciback][e2e][irq]") {
    Env env;
    Guest g(env, "g1");
    // permissive=1: the trigger register is device-specific (not a virtualised field), and
    // the function mask is an MSI-X flag, both guest-writable only in permissive mode.
    env.attach_bus(g.domid, {"0001:00:02.0"}, {"permissive=1"});
    auto front = g.connect();
    REQUIRE(front->conf_write(kDev0, 0x04, 2, 0x0002));  // memory decoding (MSI-X needs it)
    const std::uint16_t entries[] = {0, 3};
    auto ch = front->enable_msix(kDev0, entries);
    REQUIRE(ch);
    REQUIRE(ch->size() == 2);
    for (auto& c : *ch) {
        settle(c);
    }

    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 3));
    CHECK(fires((*ch)[1], 5s));
    CHECK((*ch)[1].ack());
    CHECK_FALSE((*ch)[0].pending());

    // Function-masked: held (PBA) until the guest clears the mask, then delivered.
    const std::uint32_t ctl = front->conf_read(kDev0, kMsixCtl, 2).value();
    CHECK((ctl & 0x8000) != 0);
    REQUIRE(front->conf_write(kDev0, kMsixCtl, 2, ctl | 0x4000));
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 0));
    CHECK_FALSE(fires((*ch)[0], 300ms));
    REQUIRE(front->conf_write(kDev0, kMsixCtl, 2, ctl & ~0x4000U));
    CHECK(fires((*ch)[0], 5s));
    CHECK((*ch)[0].ack());

    // Hostile: vectors the table does not have are counted and dropped.
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 8));
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 0xfe));
    CHECK(front->conf_read(kDev0, kIgnored, 4).value() == 2);
    // An entry the guest did not enable has no channel: raised, but nothing to deliver.
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 5));
    CHECK_FALSE(fires((*ch)[0], 200ms));
    CHECK_FALSE((*ch)[1].pending());

    // MSI instead.
    REQUIRE(front->disable_msix(kDev0));
    auto msi = front->enable_msi(kDev0);
    REQUIRE(msi);
    settle(*msi);
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 0));
    CHECK(fires(*msi, 5s));
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 1));
    CHECK(front->conf_read(kDev0, kIgnored, 4).value() == 3);
}

TEST_CASE("a guest masks an MSI-X entry in its mapped BAR0: the vector waits in the PBA until unmasked", "[pciback][e2e][irq]") {
    Env env;
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0001:00:02.0"}, {"permissive=1"});
    auto front = g.connect();
    REQUIRE(front->conf_write(kDev0, 0x04, 2, 0x0002));
    const std::uint16_t entries[] = {3};
    auto ch = front->enable_msix(kDev0, entries);
    REQUIRE(ch);
    settle((*ch)[0]);
    auto bar0 = front->map_bar(kDev0, 0);
    REQUIRE(bar0);
    REQUIRE(bar0->writable());
    auto word = [&](unsigned off) { return reinterpret_cast<volatile std::uint32_t*>(bar0->data() + off); };
    const unsigned ctl3 = 0x800 + 16 * 3 + 12;
    *word(ctl3) = 1;  // Vector Control: masked
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 3));
    CHECK_FALSE(fires((*ch)[0], 300ms));
    CHECK(*word(0xc00) == (1U << 3));  // pending bit, seen by the guest in its mapping
    *word(ctl3) = 0;
    // The model has no MMIO trap: it notices the unmask at its next register write (here a
    // trigger it ignores), then fires and clears the PBA.
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 8));
    CHECK(fires((*ch)[0], 5s));
    CHECK(*word(0xc00) == 0);
}

TEST_CASE("without permissive the guest cannot reach the trigger register", "[pciback][e2e][irq]") {
    Env env;
    Guest g(env, "g1");
    env.attach_bus(g.domid, {"0001:00:02.0"});
    auto front = g.connect();
    REQUIRE(front->conf_write(kDev0, 0x04, 2, 0x0002));
    auto msi = front->enable_msi(kDev0);
    REQUIRE(msi);
    settle(*msi);
    REQUIRE(front->conf_write(kDev0, kTrigger, 1, 0));  // dropped, as any unvirtualised field
    CHECK_FALSE(fires(*msi, 300ms));
    CHECK(front->conf_read(kDev0, kVendorCap, 1).value() == 0x09);  // reads pass through
}
