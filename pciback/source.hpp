// The device-source seam of pciback (style.md §1 L3, §2): where a device's "hardware" config
// space and BAR memory come from. Two sources: the emulated test device model (memfd BARs)
// and a host device through sysfs (/sys/bus/pci/devices/BDF/{config,resourceN}).
// Layer: L3. A DeviceSource is used by one thread at a time (pciback's control thread).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "hv/expected.hpp"

namespace hv::pci {

/// A PCI address (segment:bus:device.function).
struct Bdf {
    std::uint16_t domain = 0;
    std::uint8_t bus = 0;
    std::uint8_t dev = 0;  ///< 0..31
    std::uint8_t fn = 0;   ///< 0..7
    std::uint32_t devfn() const noexcept { return (std::uint32_t{dev} << 3) | fn; }
    friend auto operator<=>(const Bdf&, const Bdf&) = default;
};
/// Parses "%x:%x:%x.%x" (sharp edge 25: `dev-N` has one function digit, `vdev-N` two), and
/// the registry form "dddd-bb-dd-f". GUEST-proof: EINVAL for anything else or out of range.
Result<Bdf> parse_bdf(std::string_view s);
/// "%04x:%02x:%02x.%01x" (the `dev-N` form).
std::string to_string(const Bdf& b);
/// "%04x:%02x:%02x.%02x" (the `vdev-N` form).
std::string to_vdev_string(const Bdf& b);
/// "dddd-bb-dd-f": the name under /hvkit/pci/{assignable,emulated} (no ':' or '.' in paths).
std::string registry_key(const Bdf& b);

/// One BAR (index 0..5) or the expansion ROM (index 6) as the host assigned it.
struct BarInfo {
    std::uint64_t host_addr = 0;  ///< bus address the host gave it
    std::uint64_t size = 0;       ///< 0: not implemented
    std::uint32_t flags = 0;      ///< the BAR's low bits: bit0 I/O, bits 2:1 type, bit3 prefetch
    bool is_64() const noexcept { return (flags & 1U) == 0 && ((flags >> 1) & 3U) == 2; }
    bool is_io() const noexcept { return (flags & 1U) != 0; }
};
inline constexpr unsigned kRomIndex = 6;

class DeviceSource {
public:
    virtual ~DeviceSource() = default;
    virtual Bdf bdf() const noexcept = 0;
    /// "emulated:<model>" or "host".
    virtual std::string describe() const = 0;
    /// Bytes of config space (256 conventional, 4096 PCIe).
    virtual unsigned config_size() const noexcept = 0;
    /// Raw read of the device's register (size 1/2/4, aligned, inside config_size()).
    virtual Result<std::uint32_t> config_read(unsigned offset, unsigned size) noexcept = 0;
    /// Raw write to the device (only pciback's virtualisation layer calls this).
    virtual Result<void> config_write(unsigned offset, unsigned size,
                                      std::uint32_t value) noexcept = 0;
    /// BAR i (0..5) or the ROM (kRomIndex), as the host assigned it.
    virtual BarInfo bar(unsigned index) const noexcept = 0;
    /// An fd whose contents are BAR i's memory (memfd, or sysfs resourceN), or -1.
    virtual int bar_fd(unsigned index) const noexcept = 0;
    /// Back to the device's initial config state (teardown).
    virtual Result<void> reset() noexcept = 0;
    /// Called when the device leaves a frontend: BAR memory the next assignee gets must not be
    /// reachable through anything the previous one held. The emulated model replaces its
    /// memfds (a stale write of an old guest lands in the old file); host memory is the
    /// device's own (hv-min verified that the old guest let go of it).
    virtual Result<void> renew_memory() noexcept { return {}; }
    /// Readable (eventfd) when the device raised an interrupt; -1 if it never does.
    virtual int interrupt_fd() const noexcept { return -1; }
    /// Which vectors are pending since the last call (bit i: MSI vector / MSI-X entry i);
    /// bit 63: legacy INTx. Consumes them.
    virtual std::uint64_t take_interrupts() noexcept { return 0; }
};

/// The emulated device model `model` ("testdev") with options `opts` ("" for now) at `bdf`.
/// Errors: EINVAL (unknown model or option), memfd errors.
Result<std::unique_ptr<DeviceSource>> make_emulated_source(const Bdf& bdf, std::string_view model,
                                                           std::string_view opts);
/// A host device through `sysfs_root`/<BDF>/ (config read with pread, BARs from `resource`).
/// Errors: ENOENT (no such device), EACCES.
Result<std::unique_ptr<DeviceSource>> make_sysfs_source(
    const Bdf& bdf, const std::filesystem::path& sysfs_root = "/sys/bus/pci/devices");

}  // namespace hv::pci
