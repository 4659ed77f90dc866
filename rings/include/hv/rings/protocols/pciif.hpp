// PCI pass-through shared page (io/pciif.h, xen-abi.md §7): one op at a time, not a ring.
// Layer: L0, header-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hv::rings {

inline constexpr std::string_view XEN_PCI_MAGIC = "7";

inline constexpr unsigned _XEN_PCIF_active = 0;
inline constexpr std::uint32_t XEN_PCIF_active = 1U << _XEN_PCIF_active;
inline constexpr unsigned _XEN_PCIB_AERHANDLER = 1;
inline constexpr std::uint32_t XEN_PCIB_AERHANDLER = 1U << _XEN_PCIB_AERHANDLER;
inline constexpr unsigned _XEN_PCIB_active = 2;
inline constexpr std::uint32_t XEN_PCIB_active = 1U << _XEN_PCIB_active;

inline constexpr std::uint32_t XEN_PCI_OP_conf_read = 0;
inline constexpr std::uint32_t XEN_PCI_OP_conf_write = 1;
inline constexpr std::uint32_t XEN_PCI_OP_enable_msi = 2;
inline constexpr std::uint32_t XEN_PCI_OP_disable_msi = 3;
inline constexpr std::uint32_t XEN_PCI_OP_enable_msix = 4;
inline constexpr std::uint32_t XEN_PCI_OP_disable_msix = 5;
inline constexpr std::uint32_t XEN_PCI_OP_aer_detected = 6;
inline constexpr std::uint32_t XEN_PCI_OP_aer_resume = 7;
inline constexpr std::uint32_t XEN_PCI_OP_aer_mmio = 8;
inline constexpr std::uint32_t XEN_PCI_OP_aer_slotreset = 9;
inline constexpr std::uint32_t XEN_PCI_OP_enable_multi_msi = 10;

inline constexpr std::int32_t XEN_PCI_ERR_success = 0;
inline constexpr std::int32_t XEN_PCI_ERR_dev_not_found = -1;
inline constexpr std::int32_t XEN_PCI_ERR_invalid_offset = -2;
inline constexpr std::int32_t XEN_PCI_ERR_access_denied = -3;
inline constexpr std::int32_t XEN_PCI_ERR_not_implemented = -4;
inline constexpr std::int32_t XEN_PCI_ERR_op_failed = -5;

inline constexpr unsigned SH_INFO_MAX_VEC = 128;

struct xen_msix_entry {
    std::uint16_t vector;
    std::uint16_t entry;
};
static_assert(sizeof(xen_msix_entry) == 4);
static_assert(offsetof(xen_msix_entry, entry) == 2);

struct xen_pci_op {
    std::uint32_t cmd;  // XEN_PCI_OP_*
    std::int32_t err;   // out: XEN_PCI_ERR_* or a Linux -errno (MSI ops)
    std::uint32_t domain;
    std::uint32_t bus;
    std::uint32_t devfn;
    std::int32_t offset;
    std::int32_t size;  // 1, 2 or 4
    std::uint32_t value;
    std::uint32_t info;
    xen_msix_entry msix_entries[SH_INFO_MAX_VEC];
};
static_assert(sizeof(xen_pci_op) == 548);
static_assert(offsetof(xen_pci_op, err) == 4);
static_assert(offsetof(xen_pci_op, domain) == 8);
static_assert(offsetof(xen_pci_op, bus) == 12);
static_assert(offsetof(xen_pci_op, devfn) == 16);
static_assert(offsetof(xen_pci_op, offset) == 20);
static_assert(offsetof(xen_pci_op, size) == 24);
static_assert(offsetof(xen_pci_op, value) == 28);
static_assert(offsetof(xen_pci_op, info) == 32);
static_assert(offsetof(xen_pci_op, msix_entries) == 36);

struct xen_pcie_aer_op {
    std::uint32_t cmd;
    std::int32_t err;
    std::uint32_t domain;
    std::uint32_t bus;
    std::uint32_t devfn;
};
static_assert(sizeof(xen_pcie_aer_op) == 20);
static_assert(offsetof(xen_pcie_aer_op, err) == 4);
static_assert(offsetof(xen_pcie_aer_op, domain) == 8);
static_assert(offsetof(xen_pcie_aer_op, bus) == 12);
static_assert(offsetof(xen_pcie_aer_op, devfn) == 16);

/// The granted page's used prefix (572 bytes).
struct xen_pci_sharedinfo {
    std::uint32_t flags;  // XEN_PCIF_* / XEN_PCIB_*
    xen_pci_op op;
    xen_pcie_aer_op aer_op;
};
static_assert(sizeof(xen_pci_sharedinfo) == 572);
static_assert(offsetof(xen_pci_sharedinfo, op) == 4);
static_assert(offsetof(xen_pci_sharedinfo, aer_op) == 552);

}  // namespace hv::rings
