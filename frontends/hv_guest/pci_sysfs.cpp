// hv-guest's /sys/bus/pci file contents from untrusted config-space answers. See pci_sysfs.hpp.
#include "pci_sysfs.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace hv::guest::sysfs {
namespace {

// Linux's resource flags (include/linux/ioport.h), as sysfs `resource` shows them.
constexpr std::uint64_t kResIo = 0x100, kResMem = 0x200, kResPrefetch = 0x2000,
                        kResReadonly = 0x4000, kResSizealign = 0x40000, kResMem64 = 0x100000;

/// Sizes one BAR-like register through the ops (pciback virtualises them: the device
/// never sees the probe): the value read back after writing `probe`, then the original.
std::optional<std::uint32_t> size_mask(ConfigSpace& cs, unsigned off, std::uint32_t probe) {
    const auto orig = cs.read(off, 4);
    if (!orig || !cs.write(off, 4, probe)) {
        return std::nullopt;
    }
    const auto m = cs.read(off, 4);
    (void)cs.write(off, 4, *orig);
    return m;
}

}  // namespace

std::optional<Probed> probe(ConfigSpace& cs) {
    const auto hdr = cs.read(0x0e, 1);
    const auto status = cs.read(0x06, 2);
    if (!hdr || !status) {
        return std::nullopt;
    }
    const unsigned type = *hdr & 0x7f;
    const unsigned bars = type == 0 ? 6 : type == 1 ? 2 : 0;
    const unsigned rom = type == 0 ? 0x30 : 0x38;
    Probed p;
    char line[80];
    auto add = [&](std::uint64_t start, std::uint64_t size, std::uint64_t flags) {
        const std::uint64_t end = size != 0 ? start + size - 1 : 0;
        std::snprintf(line, sizeof line, "0x%016llx 0x%016llx 0x%016llx\n",
                      static_cast<unsigned long long>(size != 0 ? start : 0),
                      static_cast<unsigned long long>(end),
                      static_cast<unsigned long long>(size != 0 ? flags : 0));
        p.resource += line;
    };
    for (unsigned i = 0; i < bars; ++i) {
        const unsigned off = 0x10 + 4 * i;
        const auto v = cs.read(off, 4);
        const auto m = size_mask(cs, off, 0xffffffffU);
        if (!v || !m) {
            add(0, 0, 0);
            continue;
        }
        if ((*v & 1U) != 0) {  // I/O
            const std::uint32_t mask = *m & 0xfffffffcU & 0xffffU;
            add(*v & 0xfffffffcU, mask != 0 ? (~mask & 0xffffU) + 1 : 0,
                kResIo | kResSizealign | (*v & 3U));
            continue;
        }
        std::uint64_t base = *v & 0xfffffff0U;
        std::uint64_t mask = *m & 0xfffffff0U;
        std::uint64_t flags = kResMem | kResSizealign | (*v & 0xfU);
        if ((*v & 8U) != 0) {
            flags |= kResPrefetch;
        }
        const bool is64 = ((*v >> 1) & 3U) == 2 && i + 1 < bars;
        if (is64) {
            const auto hi = cs.read(off + 4, 4);
            const auto mhi = size_mask(cs, off + 4, 0xffffffffU);
            base |= hi ? std::uint64_t{*hi} << 32 : 0;
            mask |= (mhi ? std::uint64_t{*mhi} : 0xffffffffULL) << 32;
            flags |= kResMem64;
        } else {
            mask |= 0xffffffff00000000ULL;
        }
        add(base, mask != 0 && (mask & 0xfffffff0U) != 0 ? ~mask + 1 : 0, flags);
        if (is64) {
            add(0, 0, 0);  // the upper half is not a resource of its own
            ++i;
        }
    }
    for (unsigned i = bars; i < 6; ++i) {
        add(0, 0, 0);
    }
    const auto rv = cs.read(rom, 4);
    const auto rm = size_mask(cs, rom, 0xfffff800U);
    if (rv && rm && (*rm & 0xfffff800U) != 0) {
        add(*rv & 0xfffff800U, (~(*rm & 0xfffff800U)) + 1ULL,
            kResMem | kResPrefetch | kResReadonly | kResSizealign);
    } else {
        add(0, 0, 0);
    }
    // Capabilities: PCI Express (config size) and VPD. The list is the device's (or a lying
    // backend's): bounded walk.
    if ((*status & 0x10U) != 0) {
        auto at = cs.read(type == 2 ? 0x14 : 0x34, 1);
        for (unsigned n = 0; at && *at >= 0x40 && n < 48; ++n) {
            const unsigned pos = *at & 0xfcU;
            const auto id = cs.read(pos, 1);
            if (!id) {
                break;
            }
            if (*id == 0x10) {
                p.config_size = 4096;
            } else if (*id == 0x03 && p.vpd_cap == 0) {
                p.vpd_cap = pos;
            }
            at = cs.read(pos + 1, 1);
        }
    }
    return p;
}

std::optional<std::string> attribute(ConfigSpace& cs, File f) {
    char b[128];
    auto hex = [&](unsigned off, unsigned size, const char* fmt) -> std::optional<std::string> {
        const auto v = cs.read(off, size);
        if (!v) {
            return std::nullopt;
        }
        std::snprintf(b, sizeof b, fmt, *v);
        return std::string(b);
    };
    switch (f) {
        case File::vendor: return hex(0x00, 2, "0x%04x\n");
        case File::device: return hex(0x02, 2, "0x%04x\n");
        case File::subsystem_vendor: return hex(0x2c, 2, "0x%04x\n");
        case File::subsystem_device: return hex(0x2e, 2, "0x%04x\n");
        case File::revision: return hex(0x08, 1, "0x%02x\n");
        case File::irq: return hex(0x3c, 1, "%u\n");
        case File::klass: {
            const auto v = cs.read(0x08, 4);
            if (!v) {
                return std::nullopt;
            }
            std::snprintf(b, sizeof b, "0x%06x\n", *v >> 8);
            return std::string(b);
        }
        case File::modalias: {
            const auto id = cs.read(0x00, 4);
            const auto sub = cs.read(0x2c, 4);
            const auto cls = cs.read(0x08, 4);
            if (!id || !sub || !cls) {
                return std::nullopt;
            }
            std::snprintf(b, sizeof b, "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\n",
                          *id & 0xffff, *id >> 16, *sub & 0xffff, *sub >> 16, *cls >> 24,
                          (*cls >> 16) & 0xff, (*cls >> 8) & 0xff);
            return std::string(b);
        }
        default: return std::nullopt;
    }
}

unsigned access_size(unsigned pos, unsigned left) {
    if (pos % 4 == 0 && left >= 4) {
        return 4;
    }
    return pos % 2 == 0 && left >= 2 ? 2 : 1;
}

std::size_t config_read(ConfigSpace& cs, unsigned off, std::span<std::uint8_t> out) {
    std::size_t done = 0;
    while (done < out.size()) {
        const unsigned pos = off + static_cast<unsigned>(done);
        const unsigned n = access_size(pos, static_cast<unsigned>(out.size() - done));
        const auto v = cs.read(pos, n);
        if (!v) {
            break;
        }
        std::memcpy(out.data() + done, &*v, n);
        done += n;
    }
    return done;
}

std::size_t vpd_read(ConfigSpace& cs, unsigned vpd_cap, unsigned off, std::span<std::uint8_t> out) {
    std::size_t done = 0;
    while (done < out.size()) {
        const unsigned pos = off + static_cast<unsigned>(done);
        const unsigned dword = pos & ~3U;
        if (!cs.write(vpd_cap + 2, 2, dword)) {
            break;
        }
        std::optional<std::uint32_t> data;
        for (unsigned i = 0; i < kVpdPolls && !data; ++i) {
            const auto flag = cs.read(vpd_cap + 2, 2);
            if (!flag) {
                break;
            }
            if ((*flag & 0x8000U) != 0) {
                data = cs.read(vpd_cap + 4, 4);
            }
        }
        if (!data) {
            break;
        }
        const unsigned skip = pos - dword;
        const std::size_t n = std::min<std::size_t>(4 - skip, out.size() - done);
        std::memcpy(out.data() + done, reinterpret_cast<const std::uint8_t*>(&*data) + skip, n);
        done += n;
    }
    return done;
}

}  // namespace hv::guest::sysfs
