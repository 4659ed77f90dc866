// Shared by `create` and the block-*/network-* verbs: the XenStore keys libxl writes for a
// disk or a vif, xl's block-list/network-list tables, and the attach/detach sequences
// (libxl_device.c: write both directories and wait for the backend; online=0 + Closing, wait
// for Closed, remove both directories). Layer: tools. One thread.
#pragma once

#include <chrono>
#include <ostream>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cli.hpp"
#include "control.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

/// The vbd keys libxl writes for `d` (devid = its `virtual-device` number).
DeviceReq disk_device(const DiskSpec& d);
/// The vif keys libxl writes for `v` as device `devid`; a random 00:16:3e MAC when `v` has none.
DeviceReq vif_device(const VifSpec& v, std::uint32_t devid);

/// One row of `block-list` (xl: Vdev BE handle state evt-ch ring-ref BE-path); -1 = absent.
struct BlockRow {
    std::uint32_t vdev = 0;
    int backend = 0;
    int handle = 0;  // xl prints the frontend's domid here
    int state = -1;  // the frontend's state
    long long evtch = -1;
    long long ring_ref = -1;
    std::string be_path;
};
/// One row of `network-list` (xl: Idx BE Mac Addr. handle state evt-ch tx-/rx-ring-ref BE-path).
struct NicRow {
    std::uint32_t idx = 0;
    int backend = 0;
    std::string mac;
    int handle = 0;
    int state = -1;
    long long evtch = -1;
    long long tx_ref = -1;
    long long rx_ref = -1;
    std::string be_path;
    /// A DPDK vif (script names dpdk): "vhost-user:<socket>", printed after BE-path (xl has no
    /// such vifs, so its rows stay as xl prints them). Empty for other vifs.
    std::string host;
};
std::string format_block_list(std::span<const BlockRow> rows);
std::string format_network_list(std::span<const NicRow> rows);

/// The devices of `type` ("vbd"/"vif") of `domid`, or nullopt after printing why.
std::optional<std::vector<AttachedDevice>> devices_of(Cli& cli, Control& c, std::string_view verb,
                                                      std::uint16_t domid, std::string_view type);

/// Whether the domain named `name` may serve devices (xl: `backend=` must name a driver
/// domain; a plain guest runs no backend and the device would never connect): Domain-0 ("" or
/// "Domain-0") or a domain of `rows` created with driver_domain = 1. `found` gets its row.
enum class BackendCheck { ok, missing, not_driver_domain };
BackendCheck check_backend(std::span<const DomainRow> rows, const std::string& name,
                           DomainRow* found = nullptr);
/// The sentence for a refusal of check_backend for a device of `type` ("vbd", "vif", "pci"):
/// "backend domain 'NAME' does not exist" or "backend domain 'NAME' is not a driver domain
/// (create it with driver_domain = 1 and kernel = blkback)" (netback, pciback).
std::string backend_refusal(BackendCheck why, const std::string& name, std::string_view type);

/// A XenStore node as dom0 reads it; nullopt when absent or unreadable.
std::optional<std::string> read_node(Control& c, const std::string& path);

/// `/local/domain/<be>/backend/<type>/<fe>/<devid>`.
std::string backend_dir(std::uint16_t be, std::string_view type, std::uint16_t fe,
                        std::uint32_t devid);
/// The vif's MAC as the toolstack wrote it in the backend directory (the frontend's copy is
/// the guest's to rewrite), lower-case; nullopt unless it is a well-formed xx:xx:xx:xx:xx:xx.
std::optional<std::string> vif_mac(Control& c, std::uint16_t domid, const AttachedDevice& d);

/// A node of `dir` as a number; -1 when absent or not a number (xl's convention).
long long read_number(Control& c, const std::string& path);

/// Calls `done()` every 20 ms until it returns true or `timeout` passes; whether it did.
/// (The toolstack polls XenStore: a watch would need an event loop; every wait is bounded.)
bool poll_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);

/// When an attached device counts as taken by its backend, given the backend dir and its
/// state; empty: InitWait or Connected.
using AttachReady = std::function<bool(Control& c, const std::string& bdir, long long state)>;

/// Writes `req` for `dom` and waits (bounded by `timeout`) for its backend to take it
/// (`ready`). A backend that closes or never answers: the device is removed again and the
/// reason printed. Returns the exit code.
int attach_device(Cli& cli, Control& c, std::string_view verb, const DomainRow& dom,
                  const DeviceReq& req, std::chrono::milliseconds timeout,
                  const AttachReady& ready = {});

/// libxl's removal: backend online=0 and Closing, wait (bounded) for Closed, then remove
/// both directories. Without `force` a device whose backend does not close is left in place
/// (exit 1); with `force` it is removed anyway. Returns the exit code.
int detach_device(Cli& cli, Control& c, std::string_view verb, const DomainRow& dom,
                  const AttachedDevice& dev, bool force, std::chrono::milliseconds timeout);

/// The body of `block-list` / `network-list`: usage checks, then one table with a row
/// (`row_of`) per device of `type` of each domain named; an unknown domain is reported and
/// skipped, as xl does, and makes the exit status 1.
template <class Row>
int list_devices_verb(Cli& cli, std::string_view verb, std::string_view type,
                      std::span<const std::string> args,
                      Row (*row_of)(Control&, std::uint16_t, const AttachedDevice&),
                      std::string (*format)(std::span<const Row>)) {
    if (args.empty()) {
        return verb_usage(cli, verb, "which domain?");
    }
    for (const std::string& a : args) {
        if (a.size() > 1 && a[0] == '-') {
            return verb_usage(cli, verb, "unknown option '" + a + "'");
        }
    }
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    std::vector<Row> rows;
    int rc = kExitOk;
    for (const std::string& a : args) {
        auto dom = lookup_domain(cli, *c, verb, a);
        auto devs = dom ? devices_of(cli, *c, verb, dom->domid, type) : std::nullopt;
        if (!devs) {
            rc = kExitFailure;
            continue;
        }
        for (const AttachedDevice& d : *devs) {
            rows.push_back(row_of(*c, dom->domid, d));
        }
    }
    cli.out << format(rows);
    return rc;
}

/// Splits `-f`/`--force` out of `args`; anything else starting with '-' is returned as
/// `bad` (a usage error for the caller).
struct DetachArgs {
    bool force = false;
    std::vector<std::string> positional;
    std::string bad;
};
DetachArgs split_detach_args(std::span<const std::string> args);

}  // namespace hv::tools
