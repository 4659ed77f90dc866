// The contents of hv-guest's /sys/bus/pci files (hv_guest/pci.cpp) computed from a device's
// config space as pcifront's ops answer it: values the backend chose, so untrusted. Pure
// functions over a ConfigSpace (no FUSE, no pcifront), so a fuzz target runs them with a
// scripted hostile backend (tests/fuzz/pci_sysfs_fuzz.cpp).
// Layer: frontends (program). Threads: the caller's.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace hv::guest::sysfs {

enum class File : unsigned {
    config, vendor, device, subsystem_vendor, subsystem_device, klass, revision, irq, resource,
    modalias, vpd, count
};
inline constexpr std::array<const char*, static_cast<unsigned>(File::count)> kFileNames = {
    "config", "vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision",
    "irq", "resource", "modalias", "vpd"};
inline constexpr unsigned kVpdSize = 32768;  // the VPD address space (15 bits)
inline constexpr unsigned kVpdPolls = 100;   // reads of the VPD flag before giving up on a dword

/// One device's config space, as the backend answers it.
class ConfigSpace {
public:
    virtual ~ConfigSpace() = default;
    /// The value of `size` (1, 2, 4) bytes at `off`, or nullopt if the op failed.
    virtual std::optional<std::uint32_t> read(unsigned off, unsigned size) = 0;
    virtual bool write(unsigned off, unsigned size, std::uint32_t value) = 0;
};

/// What Linux knows from enumeration: `resource` (7 lines "0x%016llx 0x%016llx 0x%016llx":
/// 6 BARs and the ROM, sized through the ops), the config size (4096 with a PCI Express
/// capability, else 256) and the VPD capability's offset (0: none). The capability list is the
/// backend's: the walk is bounded. nullopt if the header type or status cannot be read.
struct Probed {
    std::string resource;
    unsigned config_size = 256;
    unsigned vpd_cap = 0;
};
std::optional<Probed> probe(ConfigSpace& cs);

/// The text of a file other than config, vpd and resource (nullopt: an op failed).
std::optional<std::string> attribute(ConfigSpace& cs, File f);

/// The naturally aligned access (4, 2 or 1 bytes) at `pos` with `left` bytes to go.
unsigned access_size(unsigned pos, unsigned left);

/// Reads `out.size()` config bytes from `off` in aligned accesses; returns how many were read
/// before an op failed.
std::size_t config_read(ConfigSpace& cs, unsigned off, std::span<std::uint8_t> out);

/// Reads VPD bytes through the capability at `vpd_cap` (write the dword's address, poll the
/// flag at most kVpdPolls times, read the data register); returns how many were read.
std::size_t vpd_read(ConfigSpace& cs, unsigned vpd_cap, unsigned off, std::span<std::uint8_t> out);

}  // namespace hv::guest::sysfs
