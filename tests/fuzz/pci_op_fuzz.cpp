// libFuzzer target for pciback's op dispatcher and config-space virtualisation: the input is
// a sequence of xen_pci_op images (548 bytes each; the first byte picks permissive mode),
// executed in order against one emulated device so state (sizing, MSI, command) carries from
// op to op. Every path must stay inside the buffers (ASan/UBSan); answers must be pciif codes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "pciback/op.hpp"

namespace {

struct Bus : hv::pci::DeviceLookup, hv::pci::InterruptRouter {
    hv::pci::Exported* find(std::uint32_t d, std::uint32_t b, std::uint32_t devfn) noexcept override {
        return d == 0 && b == 0 && devfn == 0 ? &dev : nullptr;
    }
    hv::Result<std::uint32_t> bind(hv::pci::Exported&, unsigned vector) override {
        if (vector >= 2048) {
            std::abort();  // an MSI-X entry beyond any table was accepted
        }
        return ++ports;
    }
    void release(hv::pci::Exported&) noexcept override {}
    hv::pci::Exported dev;
    std::uint32_t ports = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace hv::rings;
    if (size < 1) {
        return 0;
    }
    Bus bus;
    auto src = hv::pci::make_emulated_source(hv::pci::Bdf{1, 0, 2, 0}, "testdev", "");
    if (!src) {
        return 0;
    }
    bus.dev.src = std::move(*src);
    bus.dev.cs = std::make_unique<hv::pci::ConfigSpace>(*bus.dev.src,
                                                        hv::pci::ConfigOptions{(data[0] & 1) != 0});
    ++data;
    --size;
    while (size > 0) {
        xen_pci_op op{};
        const std::size_t n = size < sizeof op ? size : sizeof op;
        std::memcpy(&op, data, n);
        data += n;
        size -= n;
        const std::uint32_t cmd = op.cmd;
        const std::int32_t osize = op.size;
        hv::pci::execute_op(op, bus, &bus);
        if (op.err > 0 || op.err < -200) {
            std::abort();  // not a pciif code or a Linux errno
        }
        if (cmd == XEN_PCI_OP_conf_read && op.err == XEN_PCI_ERR_success && osize < 4 &&
            (op.value >> (8 * osize)) != 0) {
            std::abort();  // a read wider than its access
        }
    }
    return 0;
}
