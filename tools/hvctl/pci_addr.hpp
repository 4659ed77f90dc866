// PCI addresses as the toolstack spells them: BDF arguments (xl's forms), the xenstore
// `dev-i` / `vdev-i` values (the latter written by the backend: untrusted) and the
// /hvkit/pci registry's node names. Pure functions (fuzzed by tests/fuzz/pci_addr_fuzz.cpp).
// Layer: tools.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "hv/expected.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

/// A PCI function's address: segment (Xen's "domain"), bus, device (slot), function.
struct PciAddr {
    std::uint16_t domain = 0;
    std::uint8_t bus = 0;
    std::uint8_t dev = 0;
    std::uint8_t func = 0;
    friend auto operator<=>(const PciAddr&, const PciAddr&) = default;
};

/// "dddd:bb:dd.f" in lower case: sysfs's name and the xenstore `dev-i` spelling.
std::string to_string(const PciAddr& a);
PciAddr pci_addr(const PciSpec& s);
/// A BDF argument as xl takes it: `dddd:bb:dd.f` or `bb:dd.f` (hex; no options, vslot or `*`).
hv::expected<PciAddr, std::string> parse_bdf_arg(std::string_view s);
/// A `dev-i` node: exactly "%04x:%02x:%02x.%01x" (device <= 1f, function <= 7); nullopt
/// otherwise.
std::optional<PciAddr> parse_bdf_key(std::string_view s);
/// A `vdev-i` node (written by the backend: GUEST-grade input): exactly
/// "%04x:%02x:%02x.%02x" with device <= 1f and function <= 7; nullopt otherwise.
std::optional<PciAddr> parse_vdev_key(std::string_view s);

/// "dddd-bb-dd-f": a XenStore path element cannot hold ':' or '.'.
std::string registry_name(const PciAddr& a);
std::optional<PciAddr> parse_registry_name(std::string_view s);

}  // namespace hv::tools
