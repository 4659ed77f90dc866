// PCI address parsing and formatting (xen-abi.md §7.3, sharp edge 25). Layer: L2, pure.
#include <charconv>
#include <cstdio>

#include "pciback/source.hpp"

namespace hv::pci {

namespace {
bool hex(std::string_view s, std::uint32_t max, std::uint32_t& out) {
    if (s.empty() || s.size() > 8) {
        return false;
    }
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, 16);
    return ec == std::errc{} && p == s.data() + s.size() && out <= max;
}
}  // namespace

Result<Bdf> parse_bdf(std::string_view s) {
    // "d:b:s.f" or "d-b-s-f": split into four hex fields.
    std::string_view parts[4];
    const bool registry = s.find(':') == std::string_view::npos;
    const char seps[3] = {registry ? '-' : ':', registry ? '-' : ':', registry ? '-' : '.'};
    for (int i = 0; i < 3; ++i) {
        const auto at = s.find(seps[i]);
        if (at == std::string_view::npos) {
            return fail_errno(EINVAL);
        }
        parts[i] = s.substr(0, at);
        s.remove_prefix(at + 1);
    }
    parts[3] = s;
    std::uint32_t d = 0, b = 0, dv = 0, f = 0;
    if (!hex(parts[0], 0xffff, d) || !hex(parts[1], 0xff, b) || !hex(parts[2], 31, dv) ||
        !hex(parts[3], 7, f)) {
        return fail_errno(EINVAL);
    }
    return Bdf{static_cast<std::uint16_t>(d), static_cast<std::uint8_t>(b),
               static_cast<std::uint8_t>(dv), static_cast<std::uint8_t>(f)};
}

std::string to_string(const Bdf& b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%01x", b.domain, b.bus, b.dev, b.fn);
    return buf;
}

std::string to_vdev_string(const Bdf& b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%02x", b.domain, b.bus, b.dev, b.fn);
    return buf;
}

std::string registry_key(const Bdf& b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x-%02x-%02x-%01x", b.domain, b.bus, b.dev, b.fn);
    return buf;
}

}  // namespace hv::pci
