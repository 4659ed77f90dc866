// Config-space virtualisation (xen-abi.md §7.5, as Linux pciback's conf_space*.c): what a
// frontend reads and writes of one exported device. Kept as data: a table of Fields (offset,
// size, read and write handlers) for the header and for each recognised capability, built when
// the device is exported. Reads fetch the raw register and overlay every field they touch;
// writes go only through field handlers; a write that touches no field is dropped (warned
// once) unless permissive. Layer: L2. One thread (pciback's control thread).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hv/expected.hpp"
#include "pciback/source.hpp"

namespace hv::pci {

class ConfigSpace;

/// One virtualised register field. Handlers see the field's whole value (size bytes).
struct Field {
    std::uint16_t offset;
    std::uint8_t size;  ///< 1, 2 or 4
    /// The value the frontend sees; `raw` is the device's register. nullptr: raw.
    std::uint32_t (*read)(ConfigSpace& cs, const Field& f, std::uint32_t raw);
    /// Applies a frontend write of the whole field (bytes outside the access keep their
    /// current value); returns XEN_PCI_ERR_* (0 = done). nullptr: the write is ignored.
    std::int32_t (*write)(ConfigSpace& cs, const Field& f, std::uint32_t value);
    std::uint32_t arg = 0;  ///< BAR index, capability base...
};

struct ConfigOptions {
    bool permissive = false;  ///< `permissive=1` in opts-i: unvirtualised writes reach the device
};

/// MSI/MSI-X state of an exported device (driven by the enable/disable ops).
struct MsiState {
    bool msi = false;
    bool msix = false;
    std::vector<std::uint16_t> msix_entries;  ///< enabled MSI-X table entries
};

class ConfigSpace {
public:
    /// Builds the field table from the device's header and capability list (bounded walk).
    ConfigSpace(DeviceSource& src, ConfigOptions opt);

    /// Frontend read: XEN_PCI_ERR_*; value 0 on failure. `offset`/`size` already validated
    /// for alignment by the caller (op dispatcher); checked against config_size() here.
    std::int32_t read(unsigned offset, unsigned size, std::uint32_t& value) noexcept;
    /// Frontend write: XEN_PCI_ERR_*.
    std::int32_t write(unsigned offset, unsigned size, std::uint32_t value) noexcept;
    /// Back to the state at export: the device is reset, virtual registers re-derived.
    void reset() noexcept;

    DeviceSource& source() noexcept { return src_; }
    const ConfigOptions& options() const noexcept { return opt_; }
    MsiState& msi() noexcept { return msi_; }
    /// Offset of capability `id` (0 if absent).
    unsigned capability(std::uint8_t id) const noexcept;
    /// True if the (virtual) command register enables memory decoding.
    bool memory_enabled() const noexcept;
    std::uint64_t dropped_writes() const noexcept { return dropped_; }

    // ---- state of the header handlers (conf_space_header.c) ----
    struct BarState {
        std::uint32_t value = 0;  ///< what a read returns when not sizing
        std::uint32_t sizing = 0; ///< what a read returns while sizing
        bool armed = false;
        bool present = false;
        bool upper = false;  ///< the upper half of a 64-bit BAR
    };
    BarState bars[kRomIndex + 1];
    std::uint16_t command = 0;  ///< virtual copy of the command register

private:
    void build();
    void add_capabilities();
    DeviceSource& src_;
    ConfigOptions opt_;
    std::vector<Field> fields_;  // sorted by offset, non-overlapping
    std::vector<std::pair<std::uint8_t, unsigned>> caps_;
    MsiState msi_;
    std::uint64_t dropped_ = 0;
    bool warned_ = false;
};

}  // namespace hv::pci
