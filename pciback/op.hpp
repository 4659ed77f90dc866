// pciif operations (xen-abi.md §7.2): the frontend's op, copied out of the shared page, is
// validated and executed against the exported devices; the result goes back in the copy.
// Errors become op.err in this one place. Layer: L2, no syscalls of its own (the device
// source and the interrupt router do the I/O). One thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "hv/expected.hpp"
#include "hv/rings/protocols/pciif.hpp"
#include "pciback/conf_space.hpp"
#include "pciback/source.hpp"

namespace hv::pci {

/// Per exported device: what its frontend asked (published under statistics/).
struct OpCounters {
    std::uint64_t conf_read = 0, conf_write = 0, msi = 0, msix = 0, errors = 0;
    friend bool operator==(const OpCounters&, const OpCounters&) = default;
};

/// One device as a frontend sees it.
struct Exported {
    unsigned index = 0;  ///< its dev-<index> slot in the backend directory
    Bdf phys;            ///< host (or emulated) address
    Bdf virt;            ///< what the frontend sees (vpci: 0000:00:slot.fn)
    std::unique_ptr<DeviceSource> src;
    std::unique_ptr<ConfigSpace> cs;
    OpCounters counters;
    /// hv-min I/O-memory handles of BAR 0..5 and the ROM (kRomIndex), published as
    /// `bar-<index>-<n>`; 0 = not granted.
    std::array<std::uint32_t, 7> bar_handles{};
};

/// Routes a device's MSI vectors / MSI-X entries to event channels of its frontend.
class InterruptRouter {
public:
    virtual ~InterruptRouter() = default;
    /// An event channel the frontend can bind for vector `vector` of `dev`: its port
    /// number goes to the frontend (in place of Xen's PIRQ). Errors: ENOSPC...
    virtual Result<std::uint32_t> bind(Exported& dev, unsigned vector) = 0;
    /// Drops every channel of `dev` (MSI/MSI-X disabled, device unexported or reset).
    virtual void release(Exported& dev) noexcept = 0;
};

/// Finds an exported device by the virtual address the frontend named (nullptr if none).
class DeviceLookup {
public:
    virtual ~DeviceLookup() = default;
    virtual Exported* find(std::uint32_t domain, std::uint32_t bus, std::uint32_t devfn) noexcept = 0;
};

/// Executes `op` (the backend's private copy; GUEST: every field is the frontend's) and
/// writes err, value and, for enable_msix, msix_entries[].vector into it. `irq` may be null
/// (MSI ops then fail with op_failed). Never fails otherwise: every fault is an op.err.
void execute_op(rings::xen_pci_op& op, DeviceLookup& devs, InterruptRouter* irq) noexcept;

/// Linux errnos the MSI ops return in op.err (sharp edge 24: mixed with XEN_PCI_ERR_*).
inline constexpr std::int32_t kEINVAL = -22, kENXIO = -6, kEALREADY = -114, kENOMEM = -12;

}  // namespace hv::pci
