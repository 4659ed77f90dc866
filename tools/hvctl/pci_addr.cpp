// PCI address spellings (pci_addr.hpp). Layer: tools.
#include "pci_addr.hpp"

#include <cstdio>

namespace hv::tools {

namespace {

/// Exactly `digits` lower-case hex digits, at most `max`.
bool hex_exact(std::string_view t, std::size_t digits, unsigned max, unsigned& out) {
    if (t.size() != digits) {
        return false;
    }
    unsigned v = 0;
    for (char ch : t) {
        unsigned d = 0;
        if (ch >= '0' && ch <= '9') {
            d = static_cast<unsigned>(ch - '0');
        } else if (ch >= 'a' && ch <= 'f') {
            d = static_cast<unsigned>(ch - 'a' + 10);
        } else {
            return false;  // the spellings here are all printed with %x: lower case only
        }
        v = v * 16 + d;
    }
    if (v > max) {
        return false;
    }
    out = v;
    return true;
}

/// "dddd<s1>bb<s2>dd<s3>f..." with `fdigits` function digits, as printed by the toolstack
/// and the backend; nullopt unless exactly that.
std::optional<PciAddr> parse_fixed(std::string_view s, char s1, char s2, char s3,
                                   std::size_t fdigits) {
    if (s.size() != 4 + 1 + 2 + 1 + 2 + 1 + fdigits || s[4] != s1 || s[7] != s2 ||
        s[10] != s3) {
        return std::nullopt;
    }
    unsigned d = 0;
    unsigned b = 0;
    unsigned dv = 0;
    unsigned f = 0;
    if (!hex_exact(s.substr(0, 4), 4, 0xffff, d) || !hex_exact(s.substr(5, 2), 2, 0xff, b) ||
        !hex_exact(s.substr(8, 2), 2, 0x1f, dv) || !hex_exact(s.substr(11), fdigits, 7, f)) {
        return std::nullopt;
    }
    return PciAddr{static_cast<std::uint16_t>(d), static_cast<std::uint8_t>(b),
                   static_cast<std::uint8_t>(dv), static_cast<std::uint8_t>(f)};
}

}  // namespace

std::string to_string(const PciAddr& a) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%01x", a.domain, a.bus, a.dev, a.func);
    return buf;
}

PciAddr pci_addr(const PciSpec& s) {
    return PciAddr{s.domain, s.bus, s.dev, s.func};
}

hv::expected<PciAddr, std::string> parse_bdf_arg(std::string_view s) {
    if (s.find_first_of(",@*") != std::string_view::npos) {
        return hv::unexpected("'" + std::string(s) + "' is not a BDF ([DDDD:]BB:DD.F)");
    }
    auto p = parse_pci_spec(s);
    if (!p) {
        return hv::unexpected(p.error().text);
    }
    return pci_addr(*p);
}

std::optional<PciAddr> parse_bdf_key(std::string_view s) {
    return parse_fixed(s, ':', ':', '.', 1);
}

std::optional<PciAddr> parse_vdev_key(std::string_view s) {
    return parse_fixed(s, ':', ':', '.', 2);
}

std::string registry_name(const PciAddr& a) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04x-%02x-%02x-%01x", a.domain, a.bus, a.dev, a.func);
    return buf;
}

std::optional<PciAddr> parse_registry_name(std::string_view s) {
    return parse_fixed(s, '-', '-', '-', 1);
}

}  // namespace hv::tools
