// The emulated PCI device model ("testdev"): a type-0 header that lspci decodes (QEMU's PCI
// test device IDs), a 32-bit MMIO BAR, a 64-bit prefetchable BAR, an expansion ROM, and
// PM, MSI, MSI-X, VPD and a vendor-specific capability whose trigger register raises an
// interrupt (MSI-X entry, MSI, or INTx, whichever is enabled; masks and the PBA behave as on
// hardware). Registers behave like hardware: a per-byte writable mask and write-1-to-clear
// bits, so BAR sizing works on the raw registers too. BAR and ROM memory live in memfds.
// Layer: L3. One thread at a time.
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "hv/unique_fd.hpp"
#include "pciback/source.hpp"

namespace hv::pci {

namespace {

constexpr unsigned kCfgSize = 256;

struct BarSpec {
    std::uint64_t addr;
    std::uint64_t size;
    std::uint32_t flags;
};
// BAR0: 32-bit MMIO, 4 KiB (MSI-X table at 0x800, PBA at 0xc00); BAR2/3: 64-bit prefetchable
// 1 MiB; ROM: 64 KiB. Addresses in ranges a small host could have given them.
constexpr BarSpec kBar0{0xfebf0000ULL, 4096, 0x0};
constexpr BarSpec kBar2{0x800000000ULL, 1ULL << 20, 0xc};
constexpr BarSpec kRom{0xfeb80000ULL, 64 * 1024, 0x0};

class EmulatedSource final : public DeviceSource {
public:
    static Result<std::unique_ptr<DeviceSource>> create(const Bdf& bdf) {
        std::unique_ptr<EmulatedSource> s(new EmulatedSource(bdf));
        HV_TRY(s->renew_memory());
        s->irq_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!s->irq_) {
            return fail_errno();
        }
        s->init_config();
        return std::unique_ptr<DeviceSource>(std::move(s));
    }

    Bdf bdf() const noexcept override { return bdf_; }
    std::string describe() const override { return "emulated:testdev"; }
    unsigned config_size() const noexcept override { return kCfgSize; }

    Result<std::uint32_t> config_read(unsigned offset, unsigned size) noexcept override {
        if (size == 0 || size > 4 || offset + size > kCfgSize) {
            return fail_errno(EINVAL);
        }
        std::uint32_t v = 0;
        std::memcpy(&v, cfg_.data() + offset, size);
        return v;
    }

    Result<void> config_write(unsigned offset, unsigned size, std::uint32_t value) noexcept override {
        if (size == 0 || size > 4 || offset + size > kCfgSize) {
            return fail_errno(EINVAL);
        }
        for (unsigned i = 0; i < size; ++i) {
            const auto b = static_cast<std::uint8_t>(value >> (8 * i));
            const unsigned at = offset + i;
            cfg_[at] = static_cast<std::uint8_t>((cfg_[at] & ~wmask_[at]) | (b & wmask_[at]));
            cfg_[at] = static_cast<std::uint8_t>(cfg_[at] & ~(b & w1c_[at]));
        }
        ++writes_;
        if (offset <= kTrigger && offset + size > kTrigger) {
            trigger(static_cast<std::uint8_t>(value >> (8 * (kTrigger - offset))));
        } else if (offset + size > kMsix + 2 && offset <= kMsix + 3) {
            deliver_pending();  // MSI-X enable or function mask changed: a pending entry may fire
        }
        // VPD: a read request (flag 0) completes at once: data = 4 bytes of the VPD image.
        if (offset <= kVpdAddr && offset + size > kVpdAddr) {
            std::uint16_t a = 0;
            std::memcpy(&a, cfg_.data() + kVpdAddr, 2);
            if ((a & 0x8000U) == 0) {
                const unsigned at = a & 0x7fcU;
                std::uint32_t d = 0;
                for (unsigned i = 0; i < 4; ++i) {
                    d |= std::uint32_t{vpd_byte(at + i)} << (8 * i);
                }
                std::memcpy(cfg_.data() + kVpdData, &d, 4);
                a = static_cast<std::uint16_t>(a | 0x8000U);
                std::memcpy(cfg_.data() + kVpdAddr, &a, 2);
            }
        }
        return {};
    }

    BarInfo bar(unsigned i) const noexcept override {
        switch (i) {
            case 0: return {kBar0.addr, kBar0.size, kBar0.flags};
            case 2: return {kBar2.addr, kBar2.size, kBar2.flags};
            case kRomIndex: return {kRom.addr, kRom.size, kRom.flags};
            default: return {};
        }
    }
    int bar_fd(unsigned i) const noexcept override { return i < mem_.size() ? mem_[i].get() : -1; }

    Result<void> reset() noexcept override {
        init_config();
        return {};
    }
    /// New memfds for the BARs and the ROM (zeroed; the ROM signed again).
    Result<void> renew_memory() noexcept override {
        std::array<UniqueFd, kRomIndex + 1> fresh;
        for (unsigned i : {0U, 2U, kRomIndex}) {
            const BarInfo b = bar(i);
            UniqueFd fd(::memfd_create("hvkit-pci-bar", MFD_CLOEXEC | MFD_ALLOW_SEALING));
            if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(b.size)) != 0) {
                return fail_errno();
            }
            fresh[i] = std::move(fd);
        }
        // An option ROM header (0x55 0xAA) so tools that read it see a ROM.
        const unsigned char sig[3] = {0x55, 0xaa, 0x80};
        if (::pwrite(fresh[kRomIndex].get(), sig, sizeof sig, 0) != sizeof sig) {
            return fail_errno();
        }
        mem_ = std::move(fresh);
        return {};
    }
    int interrupt_fd() const noexcept override { return irq_.get(); }
    std::uint64_t take_interrupts() noexcept override {
        std::uint64_t n = 0;
        (void)!::read(irq_.get(), &n, sizeof n);
        return std::exchange(pending_, 0);
    }

private:
    static constexpr unsigned kPm = 0x40, kMsi = 0x50, kMsix = 0x70, kVpd = 0x80, kVendor = 0x90;
    static constexpr unsigned kVpdAddr = kVpd + 2, kVpdData = kVpd + 4;
    static constexpr unsigned kTrigger = kVendor + 4, kIgnored = kVendor + 8;
    static constexpr unsigned kMsixEntries = 8, kMsixTable = 0x800, kMsixPba = 0xc00;
    static constexpr std::uint8_t kIntxDeassert = 0xff;
    static constexpr std::uint64_t kIntxBit = 1ULL << 63;

    std::uint16_t reg16(unsigned at) const {
        std::uint16_t v = 0;
        std::memcpy(&v, cfg_.data() + at, 2);
        return v;
    }

    void raise(std::uint64_t bits) {
        pending_ |= bits;
        const std::uint64_t one = 1;
        (void)!::write(irq_.get(), &one, sizeof one);
    }

    // The MSI-X table and PBA are BAR0 memory (the memfd): the guest's writes to an entry's
    // Vector Control land there, so the model reads the mask bit when it needs it.
    bool entry_masked(unsigned n) const {
        std::uint32_t ctl = 0;
        if (::pread(mem_[0].get(), &ctl, sizeof ctl, kMsixTable + 16 * n + 12) != sizeof ctl) {
            return true;
        }
        return (ctl & 1U) != 0;
    }
    std::uint64_t pba() const {
        std::uint64_t v = 0;
        return ::pread(mem_[0].get(), &v, sizeof v, kMsixPba) == sizeof v ? v : 0;
    }
    void set_pba(std::uint64_t v) { (void)!::pwrite(mem_[0].get(), &v, sizeof v, kMsixPba); }

    /// MSI-X enabled and not function-masked: every pending entry now unmasked fires (as
    /// hardware does when the mask clears) and leaves the PBA.
    void deliver_pending() {
        const std::uint16_t ctl = reg16(kMsix + 2);
        if ((ctl & 0x8000U) == 0 || (ctl & 0x4000U) != 0) {
            return;
        }
        std::uint64_t p = pba();
        std::uint64_t fire = 0;
        for (unsigned n = 0; n < kMsixEntries; ++n) {
            if (((p >> n) & 1U) != 0 && !entry_masked(n)) {
                fire |= 1ULL << n;
            }
        }
        if (fire != 0) {
            set_pba(p & ~fire);
            raise(fire);
        }
    }

    /// A write of `n` to the trigger register: raise MSI-X entry n, the MSI vector (n = 0), or
    /// INTx (n = 0; 0xff deasserts it) — whichever interrupt mode is on. Anything else is
    /// counted in the ignored register and dropped.
    void trigger(std::uint8_t n) {
        deliver_pending();  // an entry unmasked in the table since the last look
        const std::uint16_t msix = reg16(kMsix + 2);
        const bool msi = (reg16(kMsi + 2) & 0x1U) != 0;
        if ((msix & 0x8000U) != 0) {
            if (n >= kMsixEntries) {
                return ignore();
            }
            if ((msix & 0x4000U) != 0 || entry_masked(n)) {
                set_pba(pba() | (1ULL << n));  // pending until unmasked
            } else {
                raise(1ULL << n);
            }
            return;
        }
        if (msi) {
            return n == 0 ? raise(1) : ignore();  // one vector, no per-vector masking
        }
        if (n == kIntxDeassert) {
            cfg_[0x06] = static_cast<std::uint8_t>(cfg_[0x06] & ~0x08U);
            return;
        }
        if (n != 0) {
            return ignore();
        }
        cfg_[0x06] = static_cast<std::uint8_t>(cfg_[0x06] | 0x08U);  // Interrupt Status
        if ((reg16(0x04) & 0x0400U) == 0) {                           // INTx Disable clear
            raise(kIntxBit);
        }
    }
    void ignore() {
        std::uint32_t c = 0;
        std::memcpy(&c, cfg_.data() + kIgnored, 4);
        ++c;
        std::memcpy(cfg_.data() + kIgnored, &c, 4);
    }

    explicit EmulatedSource(const Bdf& b) : bdf_(b) {}

    void put(unsigned off, unsigned size, std::uint32_t v, std::uint32_t wmask = 0,
             std::uint32_t w1c = 0) {
        for (unsigned i = 0; i < size; ++i) {
            cfg_[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
            wmask_[off + i] = static_cast<std::uint8_t>(wmask >> (8 * i));
            w1c_[off + i] = static_cast<std::uint8_t>(w1c >> (8 * i));
        }
    }

    static std::uint8_t vpd_byte(unsigned at) {
        // A minimal VPD image: large resource "Identifier String" tag, then the end tag.
        static constexpr char id[] = "hvkit test device";
        constexpr unsigned n = sizeof id - 1;
        if (at == 0) {
            return 0x82;
        }
        if (at == 1) {
            return n;
        }
        if (at == 2) {
            return 0;
        }
        if (at < 3 + n) {
            return static_cast<std::uint8_t>(id[at - 3]);
        }
        return at == 3 + n ? 0x78 : 0;
    }

    void init_config() {
        cfg_.fill(0);
        wmask_.fill(0);
        w1c_.fill(0);
        put(0x00, 2, 0x1b36);                 // vendor: Red Hat (QEMU)
        put(0x02, 2, 0x0005);                 // device: QEMU PCI test device
        put(0x04, 2, 0x0000, 0x0547);         // command: IO, MEM, MASTER, PARITY, SERR, INTX_DISABLE
        put(0x06, 2, 0x0010, 0, 0xf900);      // status: capability list; error bits W1C
        put(0x08, 4, 0xff000001);             // revision 1, class ff00 (base ff: unassigned)
        put(0x0c, 1, 0x00, 0xff);             // cache line size
        put(0x0d, 1, 0x00, 0xff);             // latency timer
        put(0x0e, 1, 0x00);                   // header type 0, single function
        put(0x10, 4, static_cast<std::uint32_t>(kBar0.addr) | kBar0.flags,
            static_cast<std::uint32_t>(~(kBar0.size - 1)));
        put(0x18, 4, static_cast<std::uint32_t>(kBar2.addr) | kBar2.flags,
            static_cast<std::uint32_t>(~(kBar2.size - 1)));
        put(0x1c, 4, static_cast<std::uint32_t>(kBar2.addr >> 32), 0xffffffffU);
        put(0x2c, 2, 0x1af4);                 // subsystem vendor
        put(0x2e, 2, 0x1100);                 // subsystem: QEMU
        put(0x30, 4, static_cast<std::uint32_t>(kRom.addr),
            static_cast<std::uint32_t>(~(kRom.size - 1)) | 1U);
        put(0x34, 1, kPm);                    // capabilities pointer
        put(0x3c, 1, 11, 0xff);               // interrupt line (host IRQ 11)
        put(0x3d, 1, 1);                      // interrupt pin INTA
        // PM: version 3, PME from D0/D3hot/D3cold (pciback hides these), PME_En set (cleared
        // by pciback at export), NoSoftReset.
        put(kPm, 1, 0x01);
        put(kPm + 1, 1, kMsi);
        put(kPm + 2, 2, 0xc803);
        put(kPm + 4, 2, 0x0108, 0x0103, 0x8000);
        // MSI: 64-bit address, one vector, per-vector masking off.
        put(kMsi, 1, 0x05);
        put(kMsi + 1, 1, kMsix);
        put(kMsi + 2, 2, 0x0080, 0x0071);
        put(kMsi + 4, 4, 0, 0xfffffffcU);
        put(kMsi + 8, 4, 0, 0xffffffffU);
        put(kMsi + 12, 2, 0, 0xffff);
        // MSI-X: 8 entries, table at BAR0+0x800, PBA at BAR0+0xc00.
        put(kMsix, 1, 0x11);
        put(kMsix + 1, 1, kVpd);
        put(kMsix + 2, 2, 0x0007, 0xc000);
        put(kMsix + 4, 4, 0x00000800);
        put(kMsix + 8, 4, 0x00000c00);
        // VPD: address (flag bit 15) and data.
        put(kVpd, 1, 0x03);
        put(kVpd + 1, 1, kVendor);
        put(kVpdAddr, 2, 0, 0xffff);
        put(kVpdData, 4, 0, 0xffffffffU);
        // Vendor-specific: length 12; the trigger register (write-only, reads 0) and the
        // count of ignored triggers (read-only).
        put(kVendor, 1, 0x09);
        put(kVendor + 1, 1, 0x00);
        put(kVendor + 2, 1, 12);
        put(kTrigger, 1, 0);
        put(kIgnored, 4, 0);
        // The MSI-X table: every entry zeroed (unmasked: guests without BAR access can still
        // take its vectors); nothing pending.
        const std::array<std::uint8_t, 16 * kMsixEntries> table{};
        (void)!::pwrite(mem_[0].get(), table.data(), table.size(), kMsixTable);
        set_pba(0);
        pending_ = 0;
    }

    Bdf bdf_;
    std::array<std::uint8_t, kCfgSize> cfg_{};
    std::array<std::uint8_t, kCfgSize> wmask_{};
    std::array<std::uint8_t, kCfgSize> w1c_{};
    std::array<UniqueFd, kRomIndex + 1> mem_{};
    UniqueFd irq_;
    std::uint64_t pending_ = 0;
    std::uint64_t writes_ = 0;
};

}  // namespace

Result<std::unique_ptr<DeviceSource>> make_emulated_source(const Bdf& bdf, std::string_view model,
                                                           std::string_view opts) {
    if (model != "testdev" || !opts.empty()) {
        return fail_errno(EINVAL);
    }
    return EmulatedSource::create(bdf);
}

}  // namespace hv::pci
