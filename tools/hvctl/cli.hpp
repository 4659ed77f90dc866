// hvctl's command line: global options, the verb table, help and dispatch.
// Layer: tools. One thread. Exit codes: 0 ok, 1 failure, 2 usage error.
#pragma once

#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control.hpp"
#include "hv/expected.hpp"

namespace hv::tools {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct Cli {
    Cli(std::ostream& o, std::ostream& e, ControlFactory f, std::string dir)
        : out(o), err(e), connect(std::move(f)), rundir(std::move(dir)) {}
    std::ostream& out;
    std::ostream& err;
    ControlFactory connect;  // reads `rundir`
    std::string rundir;      // --rundir, else $HV_RUNDIR, else /run/hvkit
    /// Connects once; prints "hvctl: cannot reach hv-min ..." on failure.
    Control* control();

private:
    std::unique_ptr<Control> control_;
};

struct Verb {
    std::string_view name;
    std::string_view args;                                    // usage after the verb name
    std::string_view summary;                                 // one line for `hvctl help`
    std::string_view help;                                    // the rest of `hvctl help VERB`
    int (*run)(Cli& cli, std::span<const std::string> args);  // nullptr only for help
};

/// Every verb, in help order.
std::span<const Verb> verbs() noexcept;
const Verb* find_verb(std::string_view name) noexcept;

/// `hvctl ARGS...` (without argv[0]).
int run_hvctl(Cli& cli, std::span<const std::string> args);

/// A verb's own argument error: prints the reason and the verb's usage line; returns 2.
int verb_usage(Cli& cli, std::string_view verb, std::string_view why);

// Verb bodies (verb_*.cpp).
int verb_create(Cli& cli, std::span<const std::string> args);
int verb_list(Cli& cli, std::span<const std::string> args);
int verb_destroy(Cli& cli, std::span<const std::string> args);
int verb_info(Cli& cli, std::span<const std::string> args);
int verb_console(Cli& cli, std::span<const std::string> args);
int verb_memset(Cli& cli, std::span<const std::string> args);
int verb_stat(Cli& cli, std::span<const std::string> args);
int verb_top(Cli& cli, std::span<const std::string> args);
int verb_block_attach(Cli& cli, std::span<const std::string> args);   // verb_block.cpp
int verb_block_detach(Cli& cli, std::span<const std::string> args);
int verb_block_list(Cli& cli, std::span<const std::string> args);
int verb_network_attach(Cli& cli, std::span<const std::string> args);  // verb_network.cpp
int verb_network_detach(Cli& cli, std::span<const std::string> args);
int verb_network_list(Cli& cli, std::span<const std::string> args);
int verb_pci_assignable_add(Cli& cli, std::span<const std::string> args);  // verb_pci.cpp
int verb_pci_assignable_remove(Cli& cli, std::span<const std::string> args);
int verb_pci_assignable_list(Cli& cli, std::span<const std::string> args);
int verb_pci_attach(Cli& cli, std::span<const std::string> args);
int verb_pci_detach(Cli& cli, std::span<const std::string> args);
int verb_pci_list(Cli& cli, std::span<const std::string> args);

/// destroy's work on `dom`: its devices (and those it serves) asked to close, the domain
/// destroyed when `alive`, then their directories and its XenStore home removed. Warnings go
/// to cli.err; 1 if hv-min failed to destroy it.
int destroy_domain(Cli& cli, Control& c, const DomainRow& dom, bool alive);
/// `hvctl create`'s watcher (domain_watch.cpp): started for each created domain unless -e.
/// Returns false (after a warning) if it could not be started.
bool start_watcher(Cli& cli, std::uint16_t domid, const std::string& name, bool driver_domain,
                   const std::string& on_poweroff, const std::string& on_crash,
                   const std::string& cfg_path, const std::vector<std::string>& overrides);
/// The watcher itself: `hvctl __watch DOMID NAME DRIVER POWEROFF CRASH CFG [KEY=VALUE...]`.
int verb_watch(Cli& cli, std::span<const std::string> args);

/// xl's memory sizes: a decimal number and one optional unit letter (b, k, m, g, t; any
/// case; MiB when none), in KiB. nullopt if malformed or too large.
std::optional<std::uint64_t> parse_mem_size_kib(std::string_view s);
/// Streams domain `domid`'s console until Ctrl-] or its death (verb_console.cpp).
int attach_console(Cli& cli, std::uint16_t domid, const std::string& name);

/// Splits a domain's `cmdline` into arguments: whitespace separates, '...' is literal,
/// "..." allows \" and \\, a backslash outside quotes escapes the next character.
hv::expected<std::vector<std::string>, std::string> split_cmdline(std::string_view s);

/// xl's State column for a state letter: "r-----", "-----d"...
std::string state_flags(char state);
/// xl's `list` table: header then one row per domain.
std::string format_list(std::span<const DomainRow> rows);
/// `list -l`: a JSON array with every field of each row.
std::string format_list_long(std::span<const DomainRow> rows);

/// Connects, lists the domains and resolves NAME|ID (a verb's usual first step). On failure
/// prints "hvctl VERB: reason" (or the connect error) and returns nullopt: exit 1.
std::optional<DomainRow> lookup_domain(Cli& cli, std::string_view verb, std::string_view name_or_id);
/// The same on an open connection `c`.
std::optional<DomainRow> lookup_domain(Cli& cli, Control& c, std::string_view verb,
                                       std::string_view name_or_id);

/// Resolves NAME or numeric ID against the live domains.
hv::expected<DomainRow, std::string> resolve_domain(std::span<const DomainRow> rows,
                                                    std::string_view name_or_id);

}  // namespace hv::tools
