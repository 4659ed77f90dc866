// Device spec strings of xl.cfg: disk (xl-disk-configuration), vif (xl-network-
// configuration, rate as libxlutil), pci (BDF + options), and vdev numbering
// (docs/misc/vbd-interface.txt). Layer: tools. Untrusted input; no recursion, no I/O.
#include <cstdio>

#include "xlcfg.hpp"

namespace hv::tools {

namespace {

SpecResult<void> fail(Errc code, std::string text) {
    return unexpected(SpecError{code, std::move(text)});
}

bool is_lower(char c) {
    return c >= 'a' && c <= 'z';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n';
}

int hex_digit(char c) {
    if (is_digit(c)) {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/// Unsigned decimal with no sign, no leading zeros (except "0") and no overflow past `max`.
bool parse_decimal(std::string_view t, std::uint64_t max, std::uint64_t& out) {
    if (t.empty() || (t.size() > 1 && t[0] == '0')) {
        return false;
    }
    std::uint64_t v = 0;
    for (char c : t) {
        if (!is_digit(c)) {
            return false;
        }
        v = v * 10 + static_cast<unsigned>(c - '0');
        if (v > max) {
            return false;
        }
    }
    out = v;
    return true;
}

/// 1..max_digits hex digits, value ≤ max.
bool parse_hex_field(std::string_view t, std::size_t max_digits, std::uint32_t max,
                     std::uint32_t& out) {
    if (t.empty() || t.size() > max_digits) {
        return false;
    }
    std::uint32_t v = 0;
    for (char c : t) {
        const int h = hex_digit(c);
        if (h < 0) {
            return false;
        }
        v = v * 16 + static_cast<std::uint32_t>(h);
    }
    if (v > max) {
        return false;
    }
    out = v;
    return true;
}

std::string_view trim(std::string_view t) {
    while (!t.empty() && (is_space(t.front()) || t.front() == '\r')) {
        t.remove_prefix(1);
    }
    while (!t.empty() && (is_space(t.back()) || t.back() == '\r')) {
        t.remove_suffix(1);
    }
    return t;
}

// ------------------------------------------------------------------ disk

/// Mirrors libxlutil's disk lexer state (tools/libs/util/libxlu_disk_l.l): which fields
/// were set, so respecification and positional order behave as in xl.
struct DiskParse {
    DiskSpec d;
    bool target_set = false;
    bool vdev_set = false;
    bool format_set = false;
    bool backendtype_set = false;
    bool cdrom_set = false;
    bool had_prefix = false;
    bool access_set = false;

    SpecResult<void> save(std::string& field, bool& set, const char* what, std::string_view value) {
        // As xl: respecifying a non-empty value is an error; overwriting "" is not.
        if (set && !field.empty()) {
            return fail(Errc::bad_disk,
                        std::string(what) + " respecified (near '" + std::string(value) + "')");
        }
        field = std::string(value);
        set = true;
        return {};
    }

    SpecResult<void> set_format(std::string_view v) {
        DiskFormat f{};
        if (v.empty() || v == "raw") {
            f = DiskFormat::raw;
        } else if (v == "qcow") {
            f = DiskFormat::qcow;
        } else if (v == "qcow2") {
            f = DiskFormat::qcow2;
        } else if (v == "vhd") {
            f = DiskFormat::vhd;
        } else if (v == "qed") {
            f = DiskFormat::qed;
        } else if (v == "empty") {
            f = DiskFormat::empty;
        } else {
            return fail(Errc::bad_disk, "unknown value for format: '" + std::string(v) + "'");
        }
        if (format_set && d.format != f) {
            return fail(Errc::bad_disk, "format respecified (near '" + std::string(v) + "')");
        }
        d.format = f;
        format_set = true;
        return {};
    }

    SpecResult<void> set_backendtype(std::string_view v) {
        DiskBackendType b{};
        if (v == "phy") {
            b = DiskBackendType::phy;
        } else if (v == "tap") {
            b = DiskBackendType::tap;
        } else if (v == "qdisk") {
            b = DiskBackendType::qdisk;
        } else if (v == "standalone") {
            b = DiskBackendType::standalone;
        } else {
            return fail(Errc::bad_disk, "unknown value for backendtype: '" + std::string(v) + "'");
        }
        if (backendtype_set && d.backendtype != b) {
            return fail(Errc::bad_disk, "backendtype respecified (near '" + std::string(v) + "')");
        }
        d.backendtype = b;
        backendtype_set = true;
        return {};
    }

    SpecResult<void> set_access(std::string_view v) {
        if (v == "r" || v == "ro") {
            d.readwrite = false;
        } else if (v == "w" || v == "rw" || v.empty()) {
            d.readwrite = true;
        } else {
            return fail(Errc::bad_disk,
                        "unknown value for access: '" + std::string(v) + "' (use r, ro, w or rw)");
        }
        return {};
    }

    /// `<vdev>:<devtype>` (deprecated positional form). Returns false if there is no colon.
    SpecResult<bool> vdev_and_devtype(std::string_view t) {
        const auto colon = t.rfind(':');
        if (colon == std::string_view::npos) {
            return false;
        }
        HV_TRY(save(d.vdev, vdev_set, "vdev", t.substr(0, colon)));
        const std::string_view type = t.substr(colon + 1);
        if (type == "cdrom") {
            d.is_cdrom = true;
        } else if (type == "disk") {
            d.is_cdrom = false;
        } else {
            return unexpected(
                SpecError{Errc::bad_disk, "unknown deprecated type '" + std::string(type) + "'"});
        }
        return true;
    }

    SpecResult<void> positional(std::string_view t) {
        if (!target_set) {
            return save(d.target, target_set, "target", t);
        }
        if (!had_prefix && !format_set) {
            if (d.target.empty()) {
                auto r = vdev_and_devtype(t);
                if (!r) {
                    return unexpected(r.error());
                }
                if (*r) {
                    d.format = DiskFormat::empty;
                    format_set = true;
                    return {};
                }
            }
            return set_format(t);
        }
        if (!vdev_set) {
            auto r = vdev_and_devtype(t);
            if (!r) {
                return unexpected(r.error());
            }
            if (!*r) {
                return save(d.vdev, vdev_set, "vdev", t);
            }
            return {};
        }
        if (!access_set) {
            access_set = true;
            return set_access(t);
        }
        return fail(Errc::bad_disk,
                    "too many positional parameters (near '" + std::string(t) + "')");
    }

    /// Handles `prefix:` at the start of the remaining text; returns its length, or 0.
    SpecResult<std::size_t> prefix(std::string_view rest) {
        std::size_t n = 0;
        if (rest.empty() || !is_lower(rest[0])) {
            return std::size_t{0};
        }
        while (n < rest.size() && (is_lower(rest[n]) || is_digit(rest[n]))) {
            ++n;
        }
        if (n >= rest.size() || rest[n] != ':') {
            return std::size_t{0};
        }
        const std::string_view p = rest.substr(0, n);
        if (p == "raw" || p == "qcow" || p == "qcow2" || p == "vhd") {
            HV_TRY(set_format(p));
        } else if (p == "iscsi" || p == "nbd" || p == "enbd" || p == "drbd") {
            bool script_set = !d.script.empty();
            HV_TRY(save(d.script, script_set, "script", "block-" + std::string(p)));
        } else if (p == "tapdisk" || p == "tap" || p == "tap2" || p == "aio" || p == "ioemu" ||
                   p == "file" || p == "phy") {
            // Deprecated and carrying no meaning in xl beyond changing positional order.
        } else {
            const bool followed_by_alnum =
                n + 1 < rest.size() && (is_lower(rest[n + 1]) || is_digit(rest[n + 1]));
            if (followed_by_alnum) {
                return std::size_t{0};  // e.g. `hdc:cdrom`: a positional vdev:devtype
            }
            return unexpected(SpecError{
                Errc::bad_disk, "unknown deprecated disk prefix '" + std::string(p) + ":'"});
        }
        had_prefix = true;
        if (d.prefix.empty()) {
            d.prefix = std::string(p);
        }
        return n + 1;
    }

    SpecResult<void> keyword(std::string_view key, std::string_view v) {
        if (key == "format") {
            return set_format(v);
        }
        if (key == "devtype") {
            if (v == "cdrom") {
                d.is_cdrom = true;
            } else if (v == "disk") {
                d.is_cdrom = false;
            } else {
                return fail(Errc::bad_disk, "unknown value for devtype: '" + std::string(v) + "'");
            }
            return {};
        }
        if (key == "access") {
            return set_access(v);
        }
        if (key == "backend") {
            bool set = !d.backend.empty();
            return save(d.backend, set, "backend", v);
        }
        if (key == "backendtype") {
            return set_backendtype(v);
        }
        if (key == "vdev") {
            return save(d.vdev, vdev_set, "vdev", v);
        }
        if (key == "script") {
            bool set = !d.script.empty();
            return save(d.script, set, "script", v);
        }
        if (key == "colo-host" || key == "colo-port" || key == "colo-export" ||
            key == "active-disk" || key == "hidden-disk" || key == "grant_usage") {
            return fail(Errc::bad_disk, "'" + std::string(key) + "' is not supported");
        }
        if (key == "specification") {
            if (v == "xen") {
                return {};
            }
            return fail(Errc::bad_disk,
                        "specification '" + std::string(v) + "' is not supported (only xen)");
        }
        return fail(Errc::bad_disk, "unknown parameter '" + std::string(key) + "'");
    }

    bool flag(std::string_view t) {
        if (t == "cdrom") {
            d.is_cdrom = true;
        } else if (t == "discard") {
            d.discard = true;
        } else if (t == "no-discard") {
            d.discard = false;
        } else if (t == "direct-io-safe") {
            d.direct_io_safe = true;
        } else if (t == "trusted") {
            d.trusted = true;
        } else if (t == "untrusted") {
            d.trusted = false;
        } else {
            return false;
        }
        return true;
    }
};

bool valid_ifname(std::string_view n) {
    if (n.empty() || n.size() > 15) {  // IFNAMSIZ - 1
        return false;
    }
    for (char c : n) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || c == '/' || c == ':') {
            return false;
        }
    }
    return n != "." && n != "..";
}

}  // namespace

const char* to_string(DiskFormat f) noexcept {
    switch (f) {
        case DiskFormat::raw:
            return "raw";
        case DiskFormat::qcow:
            return "qcow";
        case DiskFormat::qcow2:
            return "qcow2";
        case DiskFormat::vhd:
            return "vhd";
        case DiskFormat::qed:
            return "qed";
        case DiskFormat::empty:
            return "empty";
    }
    return "?";
}

const char* to_string(DiskBackendType b) noexcept {
    switch (b) {
        case DiskBackendType::unknown:
            return "unknown";
        case DiskBackendType::phy:
            return "phy";
        case DiskBackendType::tap:
            return "tap";
        case DiskBackendType::qdisk:
            return "qdisk";
        case DiskBackendType::standalone:
            return "standalone";
    }
    return "?";
}

SpecResult<std::uint32_t> vdev_to_number(std::string_view v) {
    auto bad = [&](const std::string& why) {
        return unexpected(
            SpecError{Errc::bad_disk, "invalid vdev '" + std::string(v) + "': " + why});
    };
    // d<disk>[p<partition>]
    if (v.size() >= 2 && v[0] == 'd' && is_digit(v[1])) {
        const auto p = v.find('p');
        std::uint64_t disk = 0;
        std::uint64_t part = 0;
        if (!parse_decimal(v.substr(1, p == std::string_view::npos ? v.npos : p - 1),
                           (1u << 20) - 1, disk) ||
            (p != std::string_view::npos && !parse_decimal(v.substr(p + 1), 255, part))) {
            return bad("dN[pM] needs N < 2^20 and M < 256");
        }
        if (disk <= 15 && part <= 15) {
            return static_cast<std::uint32_t>((202u << 8) | (disk << 4) | part);
        }
        return static_cast<std::uint32_t>((1u << 28) | (disk << 8) | part);
    }
    // xvd / hd / sd + letters (bijective base 26: a=0, z=25, aa=26) + optional partition.
    struct Kind {
        std::string_view prefix;
        std::uint64_t max_disk;
        std::uint64_t max_part;
    };
    static constexpr Kind kinds[] = {{"xvd", (1u << 20) - 1, 255}, {"hd", 3, 63}, {"sd", 15, 15}};
    for (const Kind& k : kinds) {
        if (v.substr(0, k.prefix.size()) != k.prefix) {
            continue;
        }
        std::string_view rest = v.substr(k.prefix.size());
        if (rest.empty() || !is_lower(rest[0])) {
            return bad("no disk letter after " + std::string(k.prefix));
        }
        std::int64_t disk = -1;
        while (!rest.empty() && is_lower(rest[0])) {
            disk = (disk + 1) * 26 + (rest[0] - 'a');
            if (disk > static_cast<std::int64_t>(k.max_disk)) {
                return bad("disk index too large for " + std::string(k.prefix));
            }
            rest.remove_prefix(1);
        }
        std::uint64_t part = 0;
        if (!rest.empty() && (rest[0] == '0' || !parse_decimal(rest, k.max_part, part))) {
            return bad("partition must be 1.." + std::to_string(k.max_part) +
                       " without leading zeros");
        }
        const auto d = static_cast<std::uint64_t>(disk);
        if (k.prefix == "xvd") {
            if (d <= 15 && part <= 15) {
                return static_cast<std::uint32_t>((202u << 8) | (d << 4) | part);
            }
            return static_cast<std::uint32_t>((1u << 28) | (d << 8) | part);
        }
        if (k.prefix == "hd") {
            if (d < 2) {
                return static_cast<std::uint32_t>((3u << 8) | (d << 6) | part);
            }
            return static_cast<std::uint32_t>((22u << 8) | ((d - 2) << 6) | part);
        }
        return static_cast<std::uint32_t>((8u << 8) | (d << 4) | part);
    }
    // A bare number, written straight to xenstore: decimal, 0x hex or leading-0 octal.
    if (!v.empty() && is_digit(v[0])) {
        std::uint64_t n = 0;
        std::string_view digits = v;
        unsigned base = 10;
        if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
            base = 16;
            digits = v.substr(2);
        } else if (v.size() > 1 && v[0] == '0') {
            base = 8;
            digits = v.substr(1);
        }
        for (char c : digits) {
            const int h = hex_digit(c);
            if (h < 0 || static_cast<unsigned>(h) >= base) {
                return bad("not a number");
            }
            n = n * base + static_cast<unsigned>(h);
            if (n > 0x7fffffffu) {
                return bad("number too large");
            }
        }
        return static_cast<std::uint32_t>(n);
    }
    return bad("use xvdX, hdX, sdX, dNpM or a number");
}

SpecResult<DiskSpec> parse_disk_spec(std::string_view spec) {
    DiskParse p;
    std::size_t i = 0;
    const std::size_t n = spec.size();
    for (char c : spec) {
        if (c == '\0') {
            return unexpected(SpecError{Errc::bad_disk, "NUL byte in disk spec"});
        }
    }
    while (i < n) {
        while (i < n && is_space(spec[i])) {
            ++i;
        }
        if (i >= n) {
            break;
        }
        std::string_view rest = spec.substr(i);
        // SPEC: `target=` eats the rest of the string, commas included (xl-disk-configuration).
        if (rest.substr(0, 7) == "target=") {
            std::string_view v = rest.substr(7);
            if (!v.empty() && v.back() == ',') {
                v.remove_suffix(1);
            }
            HV_TRY(p.save(p.d.target, p.target_set, "target", v));
            break;
        }
        auto pre = p.prefix(rest);
        if (!pre) {
            return unexpected(pre.error());
        }
        if (*pre > 0) {
            i += *pre;
            continue;
        }
        const auto comma = rest.find(',');
        const std::string_view tok = rest.substr(0, comma);
        i += comma == std::string_view::npos ? rest.size() : comma + 1;
        const auto eq = tok.find('=');
        if (eq != std::string_view::npos) {
            const std::string_view key = tok.substr(0, eq);
            bool key_ok = !key.empty() && is_lower(key[0]);
            for (char c : key) {
                key_ok = key_ok && (is_lower(c) || is_digit(c) || c == '-' || c == '_');
            }
            if (!key_ok) {
                return unexpected(
                    SpecError{Errc::bad_disk, "bad disk syntax near '" + std::string(tok) + "'"});
            }
            HV_TRY(p.keyword(key, tok.substr(eq + 1)));
            continue;
        }
        if (tok == "colo" || tok == "no-colo") {
            return unexpected(
                SpecError{Errc::bad_disk, "'" + std::string(tok) + "' is not supported"});
        }
        if (p.flag(tok)) {
            continue;
        }
        HV_TRY(p.positional(tok));
    }

    DiskSpec& d = p.d;
    if (d.is_cdrom) {
        d.readwrite = false;
        if (d.target.empty()) {
            d.format = DiskFormat::empty;
        }
    }
    if (!p.vdev_set || d.vdev.empty()) {
        return unexpected(SpecError{Errc::bad_disk, "no vdev specified"});
    }
    if (!p.target_set && !d.is_cdrom) {
        return unexpected(
            SpecError{Errc::bad_disk, "no target specified (and device not removable)"});
    }
    if (d.target.empty() && !d.is_cdrom) {
        return unexpected(SpecError{Errc::bad_disk, "empty target is only allowed for a cdrom"});
    }
    auto num = vdev_to_number(d.vdev);
    if (!num) {
        return unexpected(num.error());
    }
    d.virtual_device = *num;
    return std::move(d);
}

// ------------------------------------------------------------------ vif

SpecResult<VifRate> parse_vif_rate(std::string_view rate) {
    auto bad = [&](const std::string& why) {
        return unexpected(SpecError{Errc::bad_vif, why + " in rate '" + std::string(rate) + "'"});
    };
    const auto at = rate.find('@');
    const std::string_view bytes = rate.substr(0, at);
    if (bytes.empty()) {
        return bad("no rate specified");
    }
    // RATE: [0-9]+[GMK]?[Bb]/s
    std::size_t k = 0;
    while (k < bytes.size() && is_digit(bytes[k])) {
        ++k;
    }
    std::string_view unit = bytes.substr(k);
    const std::string_view num = bytes.substr(0, k);
    std::uint64_t scale = 1;
    if (!unit.empty() && (unit[0] == 'G' || unit[0] == 'M' || unit[0] == 'K')) {
        scale = unit[0] == 'G' ? 1000000000u : unit[0] == 'M' ? 1000000u : 1000u;
        unit.remove_prefix(1);
    }
    if (num.empty() || (unit != "B/s" && unit != "b/s")) {
        return bad("invalid rate (use N[GMK]B/s or N[GMK]b/s)");
    }
    if (num.size() > 1 && num[0] == '0') {
        return bad("leading zero (libxl would read octal)");
    }
    std::uint64_t bytes_per_sec = 0;
    for (char c : num) {
        bytes_per_sec = bytes_per_sec * 10 + static_cast<unsigned>(c - '0');
        if (bytes_per_sec > UINT32_MAX) {
            return bad("rate overflow");
        }
    }
    if (bytes_per_sec == 0) {
        return bad("zero rate");
    }
    bytes_per_sec *= scale;
    if (unit[0] == 'b') {
        bytes_per_sec /= 8;
    }

    std::uint64_t interval_usecs = 50000;  // libxl's default: 50 ms
    if (at != std::string_view::npos) {
        // INTERVAL: [0-9]+[mu]?s?  (no unit or `s` = seconds)
        const std::string_view iv = rate.substr(at + 1);
        std::size_t j = 0;
        while (j < iv.size() && is_digit(iv[j])) {
            ++j;
        }
        const std::string_view inum = iv.substr(0, j);
        std::string_view iunit = iv.substr(j);
        std::uint64_t iscale = 1000000;
        if (!iunit.empty() && (iunit[0] == 'm' || iunit[0] == 'u')) {
            iscale = iunit[0] == 'm' ? 1000 : 1;
            iunit.remove_prefix(1);
        }
        if (inum.empty() || !(iunit.empty() || iunit == "s")) {
            return bad("invalid replenishment interval (use N[s|ms|us])");
        }
        if (inum.size() > 1 && inum[0] == '0') {
            return bad("leading zero (libxl would read octal)");
        }
        std::uint64_t t = 0;
        for (char c : inum) {
            t = t * 10 + static_cast<unsigned>(c - '0');
            if (t > UINT32_MAX) {
                return bad("replenishment interval overflow");
            }
        }
        if (t == 0) {
            return bad("zero replenishment interval");
        }
        t *= iscale;
        if (t > UINT32_MAX) {
            return bad("replenishment interval overflow");
        }
        interval_usecs = t;
    }
    if (bytes_per_sec > UINT64_MAX / interval_usecs) {
        return bad("rate overflow");
    }
    return VifRate{bytes_per_sec * interval_usecs / 1000000u,
                   static_cast<std::uint32_t>(interval_usecs)};
}

std::string VifSpec::mac_string() const {
    if (!mac) {
        return {};
    }
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", (*mac)[0], (*mac)[1], (*mac)[2],
                  (*mac)[3], (*mac)[4], (*mac)[5]);
    return buf;
}

SpecResult<VifSpec> parse_vif_spec(std::string_view spec) {
    VifSpec v;
    std::vector<std::string> seen;
    auto bad = [](std::string why) { return unexpected(SpecError{Errc::bad_vif, std::move(why)}); };
    std::size_t i = 0;
    while (i <= spec.size()) {
        const auto comma = spec.find(',', i);
        const std::string_view raw =
            spec.substr(i, comma == std::string_view::npos ? spec.npos : comma - i);
        i = comma == std::string_view::npos ? spec.size() + 1 : comma + 1;
        const std::string_view tok = trim(raw);
        if (tok.empty()) {
            continue;
        }
        for (char c : tok) {
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
                return bad("control character in vif spec");
            }
        }
        const auto eq = tok.find('=');
        const std::string key(tok.substr(0, eq));
        const std::string_view val = eq == std::string_view::npos ? "" : tok.substr(eq + 1);
        for (const auto& s : seen) {
            if (s == key) {
                return bad("'" + key + "' given twice");
            }
        }
        seen.push_back(key);
        if (eq == std::string_view::npos) {
            if (key == "trusted") {
                v.trusted = true;
            } else if (key == "untrusted") {
                v.trusted = false;
            } else {
                return bad("unknown flag '" + key + "' (expected key=value)");
            }
            continue;
        }
        if (key == "mac") {
            std::array<std::uint8_t, 6> m{};
            bool ok = val.size() == 17;
            for (std::size_t b = 0; ok && b < 6; ++b) {
                const int hi = hex_digit(val[b * 3]);
                const int lo = hex_digit(val[b * 3 + 1]);
                ok = hi >= 0 && lo >= 0 && (b == 5 || val[b * 3 + 2] == ':');
                m[b] = static_cast<std::uint8_t>(hi * 16 + lo);
            }
            if (!ok) {
                return bad("invalid mac '" + std::string(val) + "' (use xx:xx:xx:xx:xx:xx)");
            }
            if ((m[0] & 1) != 0) {
                return bad("mac '" + std::string(val) + "' is a multicast address");
            }
            v.mac = m;
        } else if (key == "bridge" && val.starts_with('/')) {
            // A DPDK vif's vhost-user socket (script=vif-dpdk, checked below): a Unix socket
            // path, absolute, without spaces.
            if (val.size() > 107 || val.find(' ') != std::string_view::npos ||
                val.find('\t') != std::string_view::npos) {
                return bad("invalid bridge '" + std::string(val) +
                           "' (a vhost-user socket path: absolute, at most 107 characters, no "
                           "spaces)");
            }
            v.bridge = val;
        } else if (key == "bridge" || key == "vifname" || key == "gatewaydev") {
            if (!valid_ifname(val)) {
                return bad("invalid " + key + " '" + std::string(val) +
                           "' (an interface name: 1-15 printable characters, no '/', ':' "
                           "or space)");
            }
            (key == "bridge" ? v.bridge : key == "vifname" ? v.vifname : v.gatewaydev) = val;
        } else if (key == "type") {
            // xl's own types are vif and ioemu; ovs/openvswitch (issue #5) puts the vif on an
            // Open vSwitch bridge, as script=vif-openvswitch does.
            if (val != "vif" && val != "ioemu" && val != "ovs" && val != "openvswitch") {
                return bad("invalid type '" + std::string(val) +
                           "' (use vif, ioemu, ovs or openvswitch)");
            }
            v.type = val;
        } else if (key == "model" || key == "script" || key == "ip" || key == "backend") {
            if (val.empty()) {
                return bad("empty value for '" + key + "'");
            }
            (key == "model"    ? v.model
             : key == "script" ? v.script
             : key == "ip"     ? v.ip
                               : v.backend) = val;
        } else if (key == "rate") {
            auto r = parse_vif_rate(val);
            if (!r) {
                return unexpected(r.error());
            }
            v.rate = *r;
        } else if (key == "devid") {
            std::uint64_t d = 0;
            if (!parse_decimal(val, 0xffff, d)) {
                return bad("invalid devid '" + std::string(val) + "' (0..65535)");
            }
            v.devid = static_cast<std::uint32_t>(d);
        } else if (key == "mtu") {
            std::uint64_t m = 0;
            if (!parse_decimal(val, 65535, m) || m < 68) {
                return bad("invalid mtu '" + std::string(val) + "' (68..65535)");
            }
            v.mtu = static_cast<std::uint32_t>(m);
        } else {
            return bad("unknown parameter '" + key + "'");
        }
    }
    // script=vif-dpdk: netback serves the vif on a DPDK vhost-user port whose socket is
    // `bridge`; a path is a bridge only for such a vif.
    const bool dpdk = v.script.find("dpdk") != std::string::npos;
    if (dpdk && !v.bridge.starts_with('/')) {
        return bad("script=" + v.script + " needs bridge=<vhost-user socket path> (absolute)");
    }
    // type=ovs with another host-side script would leave netback two answers.
    if (v.is_ovs() && !v.script.empty() && v.script.find("openvswitch") == std::string::npos) {
        return bad("type=" + v.type + " conflicts with script=" + v.script +
                   " (Open vSwitch takes script=vif-openvswitch or none)");
    }
    if (!dpdk && v.bridge.starts_with('/')) {
        return bad("bridge '" + v.bridge + "' is a path: only a DPDK vif (script=vif-dpdk) "
                   "takes a vhost-user socket");
    }
    return v;
}

// ------------------------------------------------------------------ pci

std::string PciSpec::bdf() const {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%01x", domain, bus, dev, func);
    return buf;
}

SpecResult<PciSpec> parse_pci_spec(std::string_view spec) {
    PciSpec p;
    auto bad = [&](const std::string& why) { return unexpected(SpecError{Errc::bad_pci, why}); };
    const auto comma = spec.find(',');
    std::string_view addr = spec.substr(0, comma);
    const std::string_view opts =
        comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    const auto at = addr.find('@');
    if (at != std::string_view::npos) {
        std::uint32_t slot = 0;
        if (!parse_hex_field(addr.substr(at + 1), 2, 0x1f, slot)) {
            return bad("invalid virtual slot '" + std::string(addr.substr(at + 1)) +
                       "' (hex 0..1f)");
        }
        p.vslot = static_cast<std::uint8_t>(slot);
        addr = addr.substr(0, at);
    }
    const auto dot = addr.rfind('.');
    if (dot == std::string_view::npos) {
        return bad("'" + std::string(addr) + "' is not a BDF ([DDDD:]BB:DD.F)");
    }
    const std::string_view fn = addr.substr(dot + 1);
    std::string_view head = addr.substr(0, dot);
    std::uint32_t v = 0;
    if (fn == "*") {
        p.all_functions = true;
    } else if (parse_hex_field(fn, 1, 7, v)) {
        p.func = static_cast<std::uint8_t>(v);
    } else {
        return bad("invalid function '" + std::string(fn) + "' (0..7 or *)");
    }
    const auto c2 = head.rfind(':');
    if (c2 == std::string_view::npos) {
        return bad("'" + std::string(addr) + "' is not a BDF ([DDDD:]BB:DD.F)");
    }
    if (!parse_hex_field(head.substr(c2 + 1), 2, 0x1f, v)) {
        return bad("invalid device '" + std::string(head.substr(c2 + 1)) + "' (hex 00..1f)");
    }
    p.dev = static_cast<std::uint8_t>(v);
    head = head.substr(0, c2);
    const auto c1 = head.rfind(':');
    if (!parse_hex_field(head.substr(c1 == std::string_view::npos ? 0 : c1 + 1), 2, 0xff, v)) {
        return bad("invalid bus '" + std::string(head) + "' (hex 00..ff)");
    }
    p.bus = static_cast<std::uint8_t>(v);
    if (c1 != std::string_view::npos) {
        if (!parse_hex_field(head.substr(0, c1), 4, 0xffff, v)) {
            return bad("invalid domain '" + std::string(head.substr(0, c1)) + "' (hex 0..ffff)");
        }
        p.domain = static_cast<std::uint16_t>(v);
    }

    std::vector<std::string> seen;
    std::size_t i = 0;
    while (comma != std::string_view::npos && i <= opts.size()) {
        const auto next = opts.find(',', i);
        const std::string_view tok =
            opts.substr(i, next == std::string_view::npos ? opts.npos : next - i);
        i = next == std::string_view::npos ? opts.size() + 1 : next + 1;
        const auto eq = tok.find('=');
        if (eq == std::string_view::npos) {
            return bad("option '" + std::string(tok) + "' is not key=value");
        }
        const std::string key(tok.substr(0, eq));
        const std::string_view val = tok.substr(eq + 1);
        for (const auto& s : seen) {
            if (s == key) {
                return bad("option '" + key + "' given twice");
            }
        }
        seen.push_back(key);
        if (key == "permissive" || key == "msitranslate" || key == "power_mgmt" || key == "seize") {
            if (val != "0" && val != "1") {
                return bad("option '" + key + "' must be 0 or 1");
            }
            (key == "permissive"     ? p.permissive
             : key == "msitranslate" ? p.msitranslate
             : key == "power_mgmt"   ? p.power_mgmt
                                     : p.seize) = val == "1";
        } else if (key == "rdm_policy") {
            if (val != "strict" && val != "relaxed") {
                return bad("rdm_policy must be strict or relaxed");
            }
            p.rdm_policy = val;
        } else if (key == "backend") {
            if (val.empty()) {
                return bad("backend needs a domain name");
            }
            p.backend = val;
        } else {
            return bad("unknown option '" + key + "'");
        }
    }
    return p;
}

}  // namespace hv::tools
