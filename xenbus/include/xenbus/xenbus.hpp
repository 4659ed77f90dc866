// The xenbus conventions on top of the XenStore client (xen-abi.md §4.10–4.11): device
// directory paths, reading the other side's state, conditional state switches, error nodes,
// and the toolstack's side of creating and tearing down a device. Shared by backends,
// frontends and hvctl so that every one of them speaks the handshake the same way.
// Layer: L1.5 (above xs_client, below backends/frontends/tools). Stateless functions; any
// thread that may use the Client.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hv/rings/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::xenbus {

using rings::XenbusState;

/// /local/domain/<domid>
std::string domain_path(DomId domid);
/// /local/domain/<fe>/device/<type>/<devid>
std::string frontend_dir(DomId frontend, std::string_view type, std::uint32_t devid);
/// /local/domain/<be>/backend/<type>/<fe>/<devid>
std::string backend_dir(DomId backend, std::string_view type, DomId frontend,
                        std::uint32_t devid);

/// The `state` node of `dir`. A missing or unparseable node reads as XenbusStateUnknown
/// (Linux xenbus_read_driver_state); other errors (EACCES, connection) are returned.
Result<XenbusState> read_state(xs::Client& xs, std::string_view dir);

/// Writes `dir/state` the way Linux's xenbus_switch_state does: inside a transaction, only if
/// `state` still exists (a removed device directory is never resurrected) and differs.
/// Returns false if the node was gone and nothing was written. EAGAIN is retried.
Result<bool> switch_state(xs::Client& xs, std::string_view dir, XenbusState state);

/// Writes `kv` (key relative to `dir`, value) in one transaction, only while `dir/state`
/// exists: a removed device directory is never resurrected. False if it was gone.
Result<bool> write_keys(xs::Client& xs, std::string_view dir,
                        const std::vector<std::pair<std::string, std::string>>& kv);

/// The errno a device error node carries for `ec` (EIO for a non-system error).
int errno_of(const std::error_code& ec) noexcept;

/// A node that may be absent: nullopt for ENOENT, the error for anything else.
Result<std::optional<std::string>> read_optional(xs::Client& xs, std::string_view path,
                                                 xs::TxId tx = {});
/// An unsigned decimal node (GUEST: a peer may write anything: EINVAL for non-numbers,
/// ERANGE above `max`). ENOENT if absent.
Result<std::uint64_t> read_uint(xs::Client& xs, std::string_view path,
                                std::uint64_t max = UINT64_MAX, xs::TxId tx = {});
/// Parses an unsigned decimal the same way (no sign, no spaces, no trailing bytes).
Result<std::uint64_t> parse_uint(std::string_view text, std::uint64_t max = UINT64_MAX);

/// Reports a device error as Linux's xenbus_dev_error does: writes
/// "<errno> <message>" to `<home of the reporting domain>/error/<node>/error`, where `node` is
/// the device directory relative to that home (e.g. "backend/vbd/3/51712"). Best effort.
void report_error(xs::Client& xs, DomId reporter, std::string_view device_dir, int err,
                  std::string_view message);
/// Removes what report_error wrote for `device_dir` (on a successful reconnect).
void clear_error(xs::Client& xs, DomId reporter, std::string_view device_dir);

/// The (frontend, devid) pairs under /local/domain/<be>/backend/<type>. Entries whose names
/// are not numbers are skipped (GUEST-proof: a driver domain's own tree may hold anything).
struct DeviceRef {
    DomId frontend;
    std::uint32_t devid;
    friend auto operator<=>(const DeviceRef&, const DeviceRef&) = default;
};
Result<std::vector<DeviceRef>> list_backend_devices(xs::Client& xs, DomId backend,
                                                    std::string_view type);
/// Parses a path below /local/domain/<be>/backend/<type>/<fe>/<devid>[/...] into its device.
std::optional<DeviceRef> device_of_backend_path(std::string_view path, DomId backend,
                                                std::string_view type);

// ---- frontend side ----

/// A frontend's first read on every event of its watches: the backend's state (read_state of
/// `bdir`), or nullopt when the frontend's own `fdir/state` is gone: the toolstack removed the
/// device, and the frontend tears down and stops. Errors: XenStore errors other than ENOENT.
Result<std::optional<XenbusState>> backend_state_unless_removed(xs::Client& xs,
                                                                std::string_view fdir,
                                                                std::string_view bdir);

/// What a frontend's wait for Connected needs from its device.
struct FrontendWait {
    std::string_view token;                   ///< the token of the device's own watches
    std::function<Result<void>()> on_change;  ///< re-reads both states and acts on them
    /// True once connected; an error (the device died) ends the wait with it.
    std::function<Result<bool>()> connected;
    std::error_code timed_out;                ///< the frontend's own "timed out" error
};
/// Calls `on_change()` now and on each event of `wait.token` until `connected()` says so;
/// events of other tokens go to `other` (may be empty). Errors: `wait.timed_out` after
/// `timeout`, on_change()'s and connected()'s errors, XenStore errors.
Result<void> wait_connected(xs::Client& xs, const FrontendWait& wait,
                            std::chrono::milliseconds timeout,
                            const std::function<void(const std::string&, const std::string&)>& other);

/// wait_connected for a frontend device (its private state) whose `phase` has the enumerators
/// `connected` and `dead`, re-evaluated by `on_state_change()`, with watches of `token` on
/// `xs`. Errors: `gone` once the device is dead, `timed_out`, as wait_connected.
template <class Device>
Result<void> wait_phase_connected(
    Device& d, std::chrono::milliseconds timeout, std::error_code gone, std::error_code timed_out,
    const std::function<void(const std::string&, const std::string&)>& other) {
    using Phase = decltype(d.phase);
    const FrontendWait wait{.token = d.token,
                            .on_change = [&] { return d.on_state_change(); },
                            .connected = [&]() -> Result<bool> {
                                if (d.phase == Phase::dead) {
                                    return fail(gone);
                                }
                                return d.phase == Phase::connected;
                            },
                            .timed_out = timed_out};
    return wait_connected(d.xs, wait, timeout, other);
}

// ---- toolstack side (libxl_device.c conventions) ----

/// What the toolstack writes for one device.
struct DeviceSpec {
    std::string type;            ///< "vbd", "vif", "pci", "console"...
    DomId frontend;
    DomId backend;
    std::uint32_t devid = 0;
    std::string frontend_type;   ///< directory name on the frontend side; empty = `type`
    std::map<std::string, std::string> backend_keys;   ///< e.g. params, mode, mac, bridge
    std::map<std::string, std::string> frontend_keys;  ///< e.g. virtual-device, handle, mac
};

/// Creates both directories in one transaction, as libxl does: frontend dir owned by the
/// frontend and readable by the backend, backend dir owned by the backend and readable by the
/// frontend; `state = 1` on both, `online = 1`, the cross links (`backend`, `backend-id`,
/// `frontend`, `frontend-id`) and the keys of `spec`. EEXIST if either directory exists.
Result<void> create_device(xs::Client& xs, const DeviceSpec& spec);

/// Asks a device to go away (libxl's device removal): backend `online = 0` and, unless it is
/// already Closed, backend `state = Closing`. ENOENT if the backend directory is gone.
Result<void> request_close(xs::Client& xs, DomId backend, std::string_view type, DomId frontend,
                           std::uint32_t devid);

/// Removes both directories (after the backend reached Closed, or to force it).
Result<void> remove_device(xs::Client& xs, DomId backend, std::string_view type,
                           DomId frontend, std::uint32_t devid,
                           std::string_view frontend_type = {});

}  // namespace hv::xenbus
