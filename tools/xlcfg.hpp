// xl.cfg-style domain files and the device spec strings inside them (disk, vif, pci).
// Layer: tools (toolstack). Pure parsing: no I/O except parse_domain_file(); no threads.
// The syntax follows Xen's libxlutil (xl.cfg(5), xl-disk-configuration, xl-network-
// configuration); everything it cannot take is an error with `source:line: message`.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "hv/expected.hpp"

namespace hv::tools {

/// What kind of mistake a domain file or spec string contains.
enum class Errc {
    syntax = 1,     // lexical or grammar error: bad quoting, stray character, unclosed list
    unknown_key,    // a key this toolstack does not know
    duplicate_key,  // the same key set twice with `=`
    bad_value,      // wrong type or out-of-range value for a known key
    missing_key,    // a required key (name, memory, kernel) is absent
    bad_disk,       // a disk spec string xl would reject
    bad_vif,        // a vif spec string xl would reject
    bad_pci,        // a pci spec string xl would reject
    io,             // the file could not be read
};
const std::error_category& xlcfg_category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

/// The message carrier of every parser here. `message()` is the user-facing line
/// `source:line: text` (line 0 means "no particular line": `source: text`).
struct ConfigError {
    std::error_code code;
    std::string source;  // file name, or "<command line>"
    unsigned line = 0;
    std::string text;
    std::string message() const;
};
template <class T>
using CfgResult = hv::expected<T, ConfigError>;

/// Spec-string parsers report just the reason; the caller adds source and line.
struct SpecError {
    Errc code;
    std::string text;
};
template <class T>
using SpecResult = hv::expected<T, SpecError>;

// ---------------------------------------------------------------- raw syntax

/// One value of the xl.cfg grammar: a string (quoted or a bare number's text) or a
/// flat list of strings. Numbers keep their spelling; typed accessors convert.
struct CfgValue {
    enum class Kind { string, number, list };
    struct Item {
        std::string text;
        bool is_number = false;
        unsigned line = 0;
    };
    Kind kind = Kind::string;
    std::string text;         // string/number
    std::vector<Item> items;  // list
    unsigned line = 0;        // where the value starts
};

struct CfgSetting {
    std::string key;
    CfgValue value;
    std::string source;
    unsigned line = 0;  // line of the key
};

/// The settings of one file in order of appearance, after `+=` concatenation.
/// Duplicate `=` assignments are an error (xl silently keeps the last; we refuse).
CfgResult<std::vector<CfgSetting>> parse_cfg_syntax(std::string_view text, std::string_view source);

// ---------------------------------------------------------------- disks

enum class DiskFormat { raw, qcow, qcow2, vhd, qed, empty };
enum class DiskBackendType { unknown, phy, tap, qdisk, standalone };
const char* to_string(DiskFormat f) noexcept;
const char* to_string(DiskBackendType b) noexcept;

/// One `disk = [ '...' ]` entry (xl-disk-configuration(5)).
struct DiskSpec {
    std::string target;  // pdev path; empty for an empty cdrom
    DiskFormat format = DiskFormat::raw;
    std::string vdev;                  // as written: xvda, hdc, sdb3, d0p1, 51712
    std::uint32_t virtual_device = 0;  // SPEC: xen-vbd-interface encoding (also the devid)
    bool readwrite = true;             // access=rw / positional w
    bool is_cdrom = false;
    std::string backend;  // backend domain name ("" = dom0)
    DiskBackendType backendtype = DiskBackendType::unknown;
    std::string script;
    std::string prefix;           // deprecated `phy:`/`file:`/... prefix, if any
    std::optional<bool> discard;  // discard / no-discard
    std::optional<bool> trusted;  // trusted / untrusted
    bool direct_io_safe = false;
    /// xenstore `mode`: "w" or "r".
    const char* mode() const noexcept { return readwrite ? "w" : "r"; }
    /// xenstore `device-type`.
    const char* device_type() const noexcept { return is_cdrom ? "cdrom" : "disk"; }
};

/// Parses one disk spec string, keyword (`format=raw, vdev=xvda, access=rw, target=P`) or
/// positional (`phy:/dev/VG/LV,xvda,w`, `/img,raw,xvdb,r`) form, as libxlutil does.
SpecResult<DiskSpec> parse_disk_spec(std::string_view spec);

/// SPEC: docs/misc/vbd-interface.txt. xvdX/hdX/sdX/dNpM names and bare numbers (decimal,
/// 0x hex) → the xenstore `virtual-device` number; e.g. xvda = 51712, hda = 768, sda = 2048.
SpecResult<std::uint32_t> vdev_to_number(std::string_view vdev);

// ---------------------------------------------------------------- vifs

/// libxl's credit scheduler for a vif: `bytes_per_interval` every `interval_usecs`.
/// xenstore `rate` = "<bytes_per_interval>,<interval_usecs>".
struct VifRate {
    std::uint64_t bytes_per_interval = 0;
    std::uint32_t interval_usecs = 0;
};

/// One `vif = [ '...' ]` entry (xl-network-configuration(5)).
struct VifSpec {
    std::optional<std::array<std::uint8_t, 6>> mac;
    std::string bridge;
    std::string type;  // "vif", "ioemu", or "ovs"/"openvswitch" ("" = default)
    std::string model;
    std::string script;
    std::string ip;
    std::string backend;  // backend domain name ("" = dom0)
    std::string vifname;
    std::string gatewaydev;
    std::optional<VifRate> rate;
    std::optional<std::uint32_t> devid;
    std::optional<std::uint32_t> mtu;
    std::optional<bool> trusted;
    /// "xx:xx:xx:xx:xx:xx" (lower-case hex), or "" when no mac was given.
    std::string mac_string() const;
    /// type=ovs or type=openvswitch: the bridge is an Open vSwitch bridge.
    bool is_ovs() const noexcept { return type == "ovs" || type == "openvswitch"; }
};

SpecResult<VifSpec> parse_vif_spec(std::string_view spec);
/// `RATE[@INTERVAL]`: RATE is N[GMK](B|b)/s, INTERVAL is N[s|ms|us] (default 50ms),
/// converted exactly as libxlutil's xlu_vif_parse_rate.
SpecResult<VifRate> parse_vif_rate(std::string_view rate);

// ---------------------------------------------------------------- pci

/// One `pci = [ '...' ]` entry: `[DDDD:]BB:DD.F[@VSLOT][,key=value...]`.
struct PciSpec {
    std::uint16_t domain = 0;
    std::uint8_t bus = 0;
    std::uint8_t dev = 0;
    std::uint8_t func = 0;
    bool all_functions = false;  // F written as `*`
    std::optional<std::uint8_t> vslot;
    bool permissive = false;
    bool msitranslate = false;
    bool power_mgmt = false;
    bool seize = false;
    std::string rdm_policy;  // "", "strict" or "relaxed"
    /// Backend domain name ("" = dom0). Our key, as `backend=` on disks and vifs: xl's
    /// PCI_SPEC_STRING has none (libxl serves PCI from dom0 only).
    std::string backend;
    /// "%04x:%02x:%02x.%01x", the xenstore `dev-N` spelling.
    std::string bdf() const;
};

SpecResult<PciSpec> parse_pci_spec(std::string_view spec);

// ---------------------------------------------------------------- domains

enum class ActionOnShutdown {
    destroy,
    restart,
    rename_restart,
    preserve,
    coredump_destroy,
    coredump_restart,
    soft_reset
};
const char* to_string(ActionOnShutdown a) noexcept;
/// xl's spelling of an action ("destroy", "rename-restart", ...); false if none matches.
bool parse_action(std::string_view t, ActionOnShutdown& out);

struct DomainConfig {
    std::string name;
    std::uint64_t memory_mib = 0;
    std::uint64_t maxmem_mib = 0;  // = memory_mib when not given
    std::uint32_t vcpus = 1;
    std::string kernel;   // the domain's program
    std::string cmdline;  // `cmdline`, else `root=... extra`
    std::vector<DiskSpec> disks;
    std::vector<VifSpec> vifs;
    std::vector<PciSpec> pcis;
    bool driver_domain = false;
    bool trusted = false;  // our key: may map other domains' grants directly
    ActionOnShutdown on_poweroff = ActionOnShutdown::destroy;
    ActionOnShutdown on_reboot = ActionOnShutdown::restart;
    ActionOnShutdown on_crash = ActionOnShutdown::destroy;
    std::vector<std::string> warnings;  // accepted but ignored input, `source:line: text`
};

/// Settings from a file, then `overrides` (`KEY=VALUE` strings from the command line,
/// as `xl create cfg KEY=VALUE...`); an override replaces the file's value of that key.
CfgResult<DomainConfig> parse_domain_config(std::string_view text, std::string_view source,
                                            std::span<const std::string> overrides = {});

/// Reads `path` (at most 1 MiB) and parses it as above.
CfgResult<DomainConfig> parse_domain_file(const std::string& path,
                                          std::span<const std::string> overrides = {});

/// A domain name hvctl accepts: 1..64 chars of [A-Za-z0-9_.-], not all digits (those are
/// ids), not "Domain-0".
bool valid_domain_name(std::string_view name) noexcept;

}  // namespace hv::tools

template <>
struct std::is_error_code_enum<hv::tools::Errc> : std::true_type {};
