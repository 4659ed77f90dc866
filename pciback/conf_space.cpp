// Config-space virtualisation: the field tables and the read/write dispatch (conf_space.hpp).
// Layer: L2. One thread.
#include "pciback/conf_space.hpp"

#include <algorithm>
#include <cstring>

#include "hv/log.hpp"
#include "hv/rings/protocols/pciif.hpp"

namespace hv::pci {

namespace {

using rings::XEN_PCI_ERR_access_denied;
using rings::XEN_PCI_ERR_invalid_offset;
using rings::XEN_PCI_ERR_op_failed;
using rings::XEN_PCI_ERR_success;

constexpr std::uint16_t PCI_COMMAND_IO = 0x1, PCI_COMMAND_MEMORY = 0x2, PCI_COMMAND_MASTER = 0x4,
                        PCI_COMMAND_SPECIAL = 0x8, PCI_COMMAND_INVALIDATE = 0x10,
                        PCI_COMMAND_VGA_PALETTE = 0x20, PCI_COMMAND_WAIT = 0x80,
                        PCI_COMMAND_FAST_BACK = 0x200, PCI_COMMAND_INTX_DISABLE = 0x400;
// SPEC: conf_space_header.c: bits whose real value the guest sees and controls.
constexpr std::uint16_t kGuestCommand = PCI_COMMAND_MASTER | PCI_COMMAND_SPECIAL |
                                        PCI_COMMAND_INVALIDATE | PCI_COMMAND_VGA_PALETTE |
                                        PCI_COMMAND_WAIT | PCI_COMMAND_FAST_BACK;
constexpr std::uint8_t PCI_CAP_ID_PM = 0x01, PCI_CAP_ID_VPD = 0x03, PCI_CAP_ID_MSI = 0x05,
                       PCI_CAP_ID_MSIX = 0x11;
constexpr std::uint32_t PCI_ROM_ADDRESS_ENABLE = 1, PCI_ROM_ADDRESS_MASK = ~0x7ffU;

std::int32_t to_err(const Result<void>& r) { return r ? XEN_PCI_ERR_success : XEN_PCI_ERR_op_failed; }

std::uint32_t raw_of(ConfigSpace& cs, const Field& f) {
    auto v = cs.source().config_read(f.offset, f.size);
    return v ? *v : 0;
}

// ---- header ----

std::uint32_t command_read(ConfigSpace& cs, const Field&, std::uint32_t raw) {
    return (raw & kGuestCommand) | (cs.command & ~kGuestCommand);
}

std::int32_t command_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    const auto v = static_cast<std::uint16_t>(value);
    const std::uint32_t raw = raw_of(cs, f);
    // Decoding (pci_enable_device), bus mastering and MWI follow the guest; INTx disable only
    // with interrupt control (permissive here); the guest-controllable rest in permissive mode.
    std::uint16_t allowed = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                            PCI_COMMAND_INVALIDATE;
    if (cs.options().permissive) {
        allowed |= kGuestCommand | PCI_COMMAND_INTX_DISABLE;
    }
    cs.command = v;
    const std::uint32_t next = (raw & ~std::uint32_t{allowed}) | (v & allowed);
    if (next == raw) {
        return XEN_PCI_ERR_success;
    }
    return to_err(cs.source().config_write(f.offset, 2, next));
}

std::int32_t rw_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    return to_err(cs.source().config_write(f.offset, f.size, value));
}

std::int32_t bist_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    // SPEC: conf_space_header.c bist_write: only starting BIST, or leaving the rest unchanged.
    const std::uint32_t cur = raw_of(cs, f);
    if ((value & 0x40U) != 0 || ((cur ^ value) & ~0x40U) == 0) {
        return rw_write(cs, f, value);
    }
    return XEN_PCI_ERR_success;
}

std::uint32_t bar_read(ConfigSpace& cs, const Field& f, std::uint32_t) {
    const auto& b = cs.bars[f.arg];
    return b.armed ? b.sizing : b.value;
}

std::int32_t bar_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    auto& b = cs.bars[f.arg];
    if (!b.present) {
        return XEN_PCI_ERR_success;
    }
    // SPEC: §7.5: all-ones of the address bits arms sizing; anything else disarms it and is
    // not written (restoring the original value is fine: nothing changes either way).
    const std::uint32_t addr_mask = f.arg == kRomIndex ? PCI_ROM_ADDRESS_MASK
                                    : b.upper            ? 0xffffffffU
                                    : (b.value & 1U)     ? ~0x3U
                                                         : ~0xfU;
    if (f.arg == kRomIndex) {
        b.value = (b.value & ~PCI_ROM_ADDRESS_ENABLE) | (value & PCI_ROM_ADDRESS_ENABLE);
        b.sizing = (b.sizing & ~PCI_ROM_ADDRESS_ENABLE) | (value & PCI_ROM_ADDRESS_ENABLE);
    }
    b.armed = (value & addr_mask) == addr_mask;
    return XEN_PCI_ERR_success;
}

// ---- capabilities (conf_space_capability.c) ----

std::uint32_t pm_caps_read(ConfigSpace&, const Field&, std::uint32_t raw) {
    return raw & ~0xf800U;  // PME support hidden
}

std::int32_t pm_ctrl_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    // PME_Status (W1C) and Data_Select written raw; the power state as the PCI core would
    // set it; PME_En stays as pciback left it (cleared).
    const std::uint32_t cur = raw_of(cs, f);
    const std::uint32_t keep = cur & ~(0x8000U | 0x1e00U | 0x3U);
    const std::uint32_t next = keep | (value & (0x8000U | 0x1e00U | 0x3U));
    return to_err(cs.source().config_write(f.offset, 2, next & 0xffffU));
}

std::int32_t vpd_addr_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    if ((value & 0x8000U) != 0) {
        return XEN_PCI_ERR_access_denied;  // writing VPD is not for guests
    }
    return rw_write(cs, f, value);
}

std::int32_t msi_flags_write(ConfigSpace& cs, const Field& f, std::uint32_t value) {
    // SPEC: §7.5: only with interrupt control; guests use the enable_msi/msix ops.
    if (!cs.options().permissive) {
        return XEN_PCI_ERR_access_denied;
    }
    return rw_write(cs, f, value);
}

}  // namespace

ConfigSpace::ConfigSpace(DeviceSource& src, ConfigOptions opt) : src_(src), opt_(opt) { build(); }

unsigned ConfigSpace::capability(std::uint8_t id) const noexcept {
    for (const auto& [cid, at] : caps_) {
        if (cid == id) {
            return at;
        }
    }
    return 0;
}

bool ConfigSpace::memory_enabled() const noexcept { return (command & PCI_COMMAND_MEMORY) != 0; }

void ConfigSpace::build() {
    fields_.clear();
    caps_.clear();
    msi_ = MsiState{};
    auto hdr = src_.config_read(0x0e, 1);
    const unsigned type = hdr ? (*hdr & 0x7fU) : 0;
    auto cmd = src_.config_read(0x04, 2);
    command = cmd ? static_cast<std::uint16_t>(*cmd) : 0;
    fields_.push_back({0x00, 2, nullptr, nullptr});  // vendor: read-only
    fields_.push_back({0x02, 2, nullptr, nullptr});  // device: read-only
    fields_.push_back({0x04, 2, command_read, command_write});
    fields_.push_back({0x0c, 1, nullptr, rw_write});  // cache line size
    fields_.push_back({0x0d, 1, nullptr, nullptr});   // latency timer: read-only
    fields_.push_back({0x0f, 1, nullptr, bist_write});
    // BARs: type 0 has six, a bridge (type 1) two; ROM at 0x30 (0x38 on bridges).
    const unsigned nbars = type == 1 ? 2 : (type == 0 ? 6 : 0);
    for (auto& b : bars) {
        b = BarState{};
    }
    for (unsigned i = 0; i < nbars; ++i) {
        const BarInfo info = src_.bar(i);
        BarState& b = bars[i];
        fields_.push_back({static_cast<std::uint16_t>(0x10 + 4 * i), 4, bar_read, bar_write, i});
        if (info.size == 0) {
            continue;
        }
        b.present = true;
        b.value = static_cast<std::uint32_t>(info.host_addr) | info.flags;
        b.sizing = static_cast<std::uint32_t>(~(info.size - 1)) | info.flags;
        if (info.is_io()) {
            b.sizing &= 0xffffU | 0x3U;  // I/O BARs decode 16 bits
            b.sizing |= info.flags;
        }
        if (info.is_64() && i + 1 < nbars) {
            // The upper half: its own address bits, no flags.
            ++i;
            fields_.push_back({static_cast<std::uint16_t>(0x10 + 4 * i), 4, bar_read, bar_write, i});
            BarState& hi = bars[i];
            hi.present = true;
            hi.upper = true;
            hi.value = static_cast<std::uint32_t>(info.host_addr >> 32);
            hi.sizing = static_cast<std::uint32_t>(~(info.size - 1) >> 32);
        }
    }
    if (type <= 1) {
        const std::uint16_t rom_at = type == 1 ? 0x38 : 0x30;
        fields_.push_back({rom_at, 4, bar_read, bar_write, kRomIndex});
        const BarInfo rom = src_.bar(kRomIndex);
        if (rom.size != 0) {
            BarState& b = bars[kRomIndex];
            b.present = true;
            b.value = static_cast<std::uint32_t>(rom.host_addr) & PCI_ROM_ADDRESS_MASK;
            b.sizing = static_cast<std::uint32_t>(~(rom.size - 1)) & PCI_ROM_ADDRESS_MASK;
        }
    }
    fields_.push_back({0x3c, 1, nullptr, nullptr});  // interrupt line: host IRQ, read-only
    fields_.push_back({0x3d, 1, nullptr, nullptr});  // interrupt pin: read-only
    add_capabilities();
    std::sort(fields_.begin(), fields_.end(),
              [](const Field& a, const Field& b) { return a.offset < b.offset; });
}

void ConfigSpace::add_capabilities() {
    auto status = src_.config_read(0x06, 2);
    if (!status || (*status & 0x10U) == 0) {
        return;
    }
    auto ptr = src_.config_read(0x34, 1);
    unsigned at = ptr ? (*ptr & 0xfcU) : 0;
    // Bounded walk: at most 48 capabilities fit in 192 bytes; a loop ends there.
    for (int n = 0; n < 48 && at >= 0x40 && at + 4 <= 256; ++n) {
        auto hdr = src_.config_read(at, 2);
        if (!hdr) {
            break;
        }
        const auto id = static_cast<std::uint8_t>(*hdr & 0xffU);
        const auto a = static_cast<std::uint16_t>(at);
        bool known = true;
        switch (id) {
            case PCI_CAP_ID_PM:
                fields_.push_back({static_cast<std::uint16_t>(a + 2), 2, pm_caps_read, nullptr});
                fields_.push_back({static_cast<std::uint16_t>(a + 4), 2, nullptr, pm_ctrl_write});
                // PME_En cleared at export (conf_space_capability.c pm_ctrl_init).
                if (auto c = src_.config_read(a + 4U, 2); c && (*c & 0x0100U) != 0) {
                    (void)src_.config_write(a + 4U, 2, *c & ~0x8100U);
                }
                break;
            case PCI_CAP_ID_VPD:
                fields_.push_back({static_cast<std::uint16_t>(a + 2), 2, nullptr, vpd_addr_write});
                fields_.push_back({static_cast<std::uint16_t>(a + 4), 4, nullptr, rw_write});
                break;
            case PCI_CAP_ID_MSI:
            case PCI_CAP_ID_MSIX:
                fields_.push_back({static_cast<std::uint16_t>(a + 2), 2, nullptr, msi_flags_write});
                break;
            default:
                known = false;  // not hidden; reads pass through, writes dropped
                break;
        }
        if (known) {
            fields_.push_back({a, 2, nullptr, nullptr});  // ID/Next: read-only
        }
        if (std::none_of(caps_.begin(), caps_.end(), [&](const auto& c) { return c.first == id; })) {
            caps_.emplace_back(id, at);
        }
        at = (*hdr >> 8) & 0xfcU;
    }
}

std::int32_t ConfigSpace::read(unsigned offset, unsigned size, std::uint32_t& value) noexcept {
    value = 0;
    if (offset + size > src_.config_size()) {
        return XEN_PCI_ERR_invalid_offset;
    }
    auto raw = src_.config_read(offset, size);
    if (!raw) {
        return XEN_PCI_ERR_op_failed;
    }
    std::uint8_t buf[4] = {};
    std::memcpy(buf, &*raw, 4);
    for (const Field& f : fields_) {
        if (f.offset >= offset + size) {
            break;
        }
        if (f.offset + f.size <= offset) {
            continue;
        }
        std::uint32_t fv = 0;
        if (f.read != nullptr) {
            fv = f.read(*this, f, raw_of(*this, f));
        } else {
            fv = raw_of(*this, f);
        }
        // Overlay the bytes of the field that fall inside the access.
        for (unsigned i = 0; i < f.size; ++i) {
            const unsigned at = f.offset + i;
            if (at >= offset && at < offset + size) {
                buf[at - offset] = static_cast<std::uint8_t>(fv >> (8 * i));
            }
        }
    }
    std::memcpy(&value, buf, 4);
    if (size < 4) {
        value &= (1U << (8 * size)) - 1;
    }
    return XEN_PCI_ERR_success;
}

std::int32_t ConfigSpace::write(unsigned offset, unsigned size, std::uint32_t value) noexcept {
    if (offset + size > src_.config_size()) {
        return XEN_PCI_ERR_invalid_offset;
    }
    unsigned handled = 0;  // bit i: byte offset+i belongs to a field
    for (const Field& f : fields_) {
        if (f.offset >= offset + size) {
            break;
        }
        if (f.offset + f.size <= offset) {
            continue;
        }
        // The field's new value: its current value with the written bytes replaced.
        std::uint32_t fv = f.read != nullptr ? f.read(*this, f, raw_of(*this, f)) : raw_of(*this, f);
        for (unsigned i = 0; i < f.size; ++i) {
            const unsigned at = f.offset + i;
            if (at >= offset && at < offset + size) {
                const std::uint32_t b = (value >> (8 * (at - offset))) & 0xffU;
                fv = (fv & ~(0xffU << (8 * i))) | (b << (8 * i));
                handled |= 1U << (at - offset);
            }
        }
        if (f.write != nullptr) {
            if (const std::int32_t e = f.write(*this, f, fv); e != XEN_PCI_ERR_success) {
                return e;
            }
        }
    }
    const unsigned all = (1U << size) - 1;
    if (handled == all) {
        return XEN_PCI_ERR_success;
    }
    if (!opt_.permissive) {
        ++dropped_;
        if (!warned_) {
            warned_ = true;
            HV_WARN("pciback %s: write to %#x (size %u) dropped: not a virtualised field "
                    "(permissive=1 lets such writes through)",
                    to_string(src_.bdf()).c_str(), offset, size);
        }
        return XEN_PCI_ERR_success;
    }
    // Permissive: the bytes no field took go to the device.
    for (unsigned i = 0; i < size; ++i) {
        if ((handled & (1U << i)) == 0) {
            if (!src_.config_write(offset + i, 1, (value >> (8 * i)) & 0xffU)) {
                return XEN_PCI_ERR_op_failed;
            }
        }
    }
    return XEN_PCI_ERR_success;
}

void ConfigSpace::reset() noexcept {
    (void)src_.reset();
    build();
}

}  // namespace hv::pci
