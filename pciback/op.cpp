// pciif operation dispatch (op.hpp). Layer: L2. One thread.
#include "pciback/op.hpp"

#include <algorithm>

#include "hv/log.hpp"

namespace hv::pci {

namespace {

using namespace hv::rings;

bool valid_access(std::int32_t offset, std::int32_t size) {
    return (size == 1 || size == 2 || size == 4) && offset >= 0 && offset < 4096 &&
           offset % size == 0;
}

std::int32_t msi_flags(Exported& d, unsigned cap, std::uint16_t set, std::uint16_t clear) {
    auto f = d.src->config_read(cap + 2, 2);
    if (!f) {
        return XEN_PCI_ERR_op_failed;
    }
    const auto next = static_cast<std::uint16_t>((*f & ~clear) | set);
    return d.src->config_write(cap + 2, 2, next) ? XEN_PCI_ERR_success : XEN_PCI_ERR_op_failed;
}

void enable_msi(xen_pci_op& op, Exported& d, InterruptRouter* irq) {
    ++d.counters.msi;
    op.value = 0;
    MsiState& m = d.cs->msi();
    const unsigned cap = d.cs->capability(0x05);
    // SPEC: pciback_ops.c xen_pcibk_enable_msi: every failure is op_failed.
    if (m.msi || m.msix || cap == 0 || irq == nullptr) {
        op.err = XEN_PCI_ERR_op_failed;
        return;
    }
    auto port = irq->bind(d, 0);
    if (!port) {
        op.err = XEN_PCI_ERR_op_failed;
        return;
    }
    if (msi_flags(d, cap, 0x1, 0x70) != XEN_PCI_ERR_success) {  // enable, one vector
        irq->release(d);
        op.err = XEN_PCI_ERR_op_failed;
        return;
    }
    m.msi = true;
    op.value = *port;
    op.err = XEN_PCI_ERR_success;
}

void disable_msi(xen_pci_op& op, Exported& d, InterruptRouter* irq) {
    ++d.counters.msi;
    MsiState& m = d.cs->msi();
    if (m.msi) {
        (void)msi_flags(d, d.cs->capability(0x05), 0, 0x1);
        if (irq != nullptr) {
            irq->release(d);
        }
        m.msi = false;
    }
    op.value = 0;  // no legacy interrupt routed
    op.err = XEN_PCI_ERR_success;
}

void enable_msix(xen_pci_op& op, Exported& d, InterruptRouter* irq) {
    ++d.counters.msix;
    MsiState& m = d.cs->msi();
    const unsigned cap = d.cs->capability(0x11);
    auto cmd = d.src->config_read(0x04, 2);
    // SPEC: xen_pcibk_enable_msix: memory decoding must be on (the table is in a BAR).
    if (m.msi || !cmd || (*cmd & 0x2U) == 0) {
        op.err = kENXIO;
        return;
    }
    if (op.value > SH_INFO_MAX_VEC || op.value == 0) {
        op.err = kEINVAL;
        return;
    }
    if (m.msix) {
        op.err = kEALREADY;
        return;
    }
    if (cap == 0 || irq == nullptr) {
        op.err = kEINVAL;
        return;
    }
    auto flags = d.src->config_read(cap + 2, 2);
    const unsigned table = flags ? (*flags & 0x7ffU) + 1 : 0;
    const unsigned n = op.value;
    std::vector<std::uint16_t> entries;
    for (unsigned i = 0; i < n; ++i) {
        const std::uint16_t e = op.msix_entries[i].entry;
        if (e >= table || std::find(entries.begin(), entries.end(), e) != entries.end()) {
            op.err = kEINVAL;
            return;
        }
        entries.push_back(e);
    }
    for (unsigned i = 0; i < n; ++i) {
        auto port = irq->bind(d, entries[i]);
        if (!port || *port > 0xffffU) {
            irq->release(d);
            op.err = kENOMEM;
            return;
        }
        op.msix_entries[i].vector = static_cast<std::uint16_t>(*port);
    }
    if (msi_flags(d, cap, 0x8000, 0x4000) != XEN_PCI_ERR_success) {  // enable, unmask
        irq->release(d);
        op.err = XEN_PCI_ERR_op_failed;
        return;
    }
    m.msix = true;
    m.msix_entries = std::move(entries);
    op.err = XEN_PCI_ERR_success;
}

void disable_msix(xen_pci_op& op, Exported& d, InterruptRouter* irq) {
    ++d.counters.msix;
    MsiState& m = d.cs->msi();
    if (m.msix) {
        (void)msi_flags(d, d.cs->capability(0x11), 0, 0x8000);
        if (irq != nullptr) {
            irq->release(d);
        }
        m.msix = false;
        m.msix_entries.clear();
    }
    op.value = 0;
    op.err = XEN_PCI_ERR_success;
}

}  // namespace

void execute_op(xen_pci_op& op, DeviceLookup& devs, InterruptRouter* irq) noexcept {
    Exported* d = devs.find(op.domain, op.bus, op.devfn);
    if (d == nullptr) {
        op.err = XEN_PCI_ERR_dev_not_found;
        return;
    }
    switch (op.cmd) {
        case XEN_PCI_OP_conf_read: {
            ++d->counters.conf_read;
            if (!valid_access(op.offset, op.size)) {
                op.value = 0;
                op.err = XEN_PCI_ERR_invalid_offset;
                break;
            }
            std::uint32_t v = 0;
            op.err = d->cs->read(static_cast<unsigned>(op.offset), static_cast<unsigned>(op.size), v);
            op.value = v;
            break;
        }
        case XEN_PCI_OP_conf_write:
            ++d->counters.conf_write;
            if (!valid_access(op.offset, op.size)) {
                op.err = XEN_PCI_ERR_invalid_offset;
                break;
            }
            op.err = d->cs->write(static_cast<unsigned>(op.offset), static_cast<unsigned>(op.size),
                                  op.size == 4 ? op.value
                                               : op.value & ((1U << (8 * op.size)) - 1));
            break;
        case XEN_PCI_OP_enable_msi:
            enable_msi(op, *d, irq);
            break;
        case XEN_PCI_OP_disable_msi:
            disable_msi(op, *d, irq);
            break;
        case XEN_PCI_OP_enable_msix:
            enable_msix(op, *d, irq);
            break;
        case XEN_PCI_OP_disable_msix:
            disable_msix(op, *d, irq);
            break;
        default:  // AER ops go backend → frontend; enable_multi_msi is not in Linux either
            op.err = XEN_PCI_ERR_not_implemented;
            break;
    }
    if (op.err != XEN_PCI_ERR_success) {
        ++d->counters.errors;
    }
}

}  // namespace hv::pci
