// PCI pass-through, the toolstack's side (xen-abi §7.3/§7.4): host addresses, the
// /hvkit/pci registry shared with pciback, the backend keys libxl writes for `pci = [...]` and
// for hot-plug, who holds which device, and the host's sysfs driver (un)binding. Shared by
// `create` and the pci-* verbs. Layer: tools. One thread.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "control.hpp"
#include "hv/expected.hpp"
#include "pci_addr.hpp"
#include "xlcfg.hpp"

namespace hv::tools {

// ---- the registry shared with pciback (/hvkit/pci, written as dom0) ----

/// Exists iff the device is assignable; value = the host driver it was unbound from.
inline constexpr std::string_view kPciAssignableDir = "/hvkit/pci/assignable";
/// Written by pciback for each device it emulates; value = the model.
inline constexpr std::string_view kPciEmulatedDir = "/hvkit/pci/emulated";
// ---- backend keys (libxl_pci.c layout) ----

/// Backend dir keys of a pci slot that move together when a lower slot is removed.
inline constexpr std::string_view kPciSlotKeys[] = {"state", "key",    "dev", "vdev",
                                                    "opts",  "vdevfn", "name"};
/// `opts-i`: "msitranslate=%d,power_mgmt=%d,permissive=%d,rdm_policy=strict|relaxed".
std::string pci_opts(const PciSpec& s);
/// Slot `i` of `s`: dev-i, key-i, opts-i, vdevfn-i (only with a vslot) and state-i = 1.
std::map<std::string, std::string> pci_slot_keys(const PciSpec& s, unsigned i);
/// The domain's pci device (devid 0) as libxl writes it before the domain runs: `domain`
/// (its name), `num_devs` and slots 0..N-1 for `specs`, served by `backend_domain`
/// ("" = Domain-0).
DeviceReq pci_device(std::span<const PciSpec> specs, const std::string& domain_name,
                     const std::string& backend_domain);
/// §7.4 hot-plug into the Connected backend dir `bdir` holding `n` slots: slot n's keys,
/// num_devs = n+1 and backend state = 7, guarded by state == 4 and num_devs == n.
std::vector<StoreOp> pci_attach_ops(const std::string& bdir, const PciSpec& s, unsigned n);
/// Withdraws an attach request nobody answered: slot n's keys removed, num_devs = n and the
/// backend state back to Connected, guarded by what pci_attach_ops wrote (state == 7,
/// num_devs == n+1, dev-n == the device, state-n == 1).
std::vector<StoreOp> pci_undo_attach_ops(const std::string& bdir, const PciSpec& s, unsigned n);
/// §7.4 detach request for slot `i` holding `a`: state-i = 5 and backend state = 7, guarded
/// by state == 4 and dev-i == a.
std::vector<StoreOp> pci_detach_request_ops(const std::string& bdir, unsigned i,
                                            const PciAddr& a);
/// §7.4 after the backend is back at Connected: slot `i`'s keys deleted, every higher slot's
/// keys renumbered down by one, num_devs = n-1. `keys` is the backend dir as read (node name
/// -> value); each moved value and num_devs are guarded, so a concurrent change abandons the
/// transaction instead of losing it.
std::vector<StoreOp> pci_remove_slot_ops(const std::string& bdir,
                                         const std::map<std::string, std::string>& keys,
                                         unsigned i, unsigned n);

// ---- who holds what ----

/// One slot of a pci backend dir, as the toolstack wrote it (dev-i) and the backend
/// reported it (vdev-i, state-i; validated).
struct PciSlot {
    unsigned index = 0;
    std::optional<PciAddr> addr;  // nullopt: dev-i missing or malformed
    std::optional<PciAddr> vdev;  // nullopt: not exported yet, or malformed
    long long state = -1;         // state-i, -1 when absent or not a number
};
/// /local/domain/<backend>/backend/pci/<frontend>/0.
struct PciBackend {
    std::uint16_t frontend = 0;
    std::uint16_t backend = 0;
    std::string dir;
    long long state = -1;  // the backend's state
    std::vector<PciSlot> slots;  // 0..num_devs-1 (num_devs capped at 256)
};
/// Reads a pci backend dir; nullopt when it does not exist.
std::optional<PciBackend> read_pci_backend(Control& c, std::uint16_t backend,
                                           std::uint16_t frontend);
/// The pci backend dir of `frontend` under any live domain of `rows` (dom0 first).
std::optional<PciBackend> find_pci_backend(Control& c, std::span<const DomainRow> rows,
                                           std::uint16_t frontend);
/// Every device assigned to a live domain: address -> (frontend, backend). A pci backend
/// dir whose frontend is no longer alive is removed with its frontend dir (a dead domain's
/// devices are assignable again, as after `destroy`).
std::map<PciAddr, PciBackend> pci_assignments(Control& c, std::span<const DomainRow> rows);

/// xl's pci-list table: "Vdev Device", then "ss.f dddd:bb:dd.f" per slot (vdev from the
/// backend's validated vdev-i; "--.-" until it exported the device).
std::string format_pci_list(std::span<const PciSlot> slots);

/// The registry value of an assignable device (its original driver); nullopt if not
/// assignable.
std::optional<std::string> assignable_driver(Control& c, const PciAddr& a);
/// Every assignable device, sorted (registry entries that do not parse are skipped).
std::vector<PciAddr> assignable_devices(Control& c);
/// Whether pciback announced `a` as an emulated device (after prune_emulated_registry).
bool is_emulated(Control& c, const PciAddr& a);
/// Removes the registry entries recorded for a driver domain that is no longer alive (it
/// died without `destroy`: a crashed or killed domain leaves hv-min's list at once).
void prune_emulated_registry(Control& c);

/// What pci-attach and create require of a device: assignable and held by no domain of
/// `held` (pci_assignments). Prints why not (as `verb`) and returns false.
bool pci_check_free(Cli& cli, Control& c, std::string_view verb,
                    std::span<const DomainRow> rows, const std::map<PciAddr, PciBackend>& held,
                    const PciAddr& a);
/// pci-assignable-add's work for a device not assignable yet: a host device is unbound
/// (driver_override first) and recorded with its driver, an emulated one recorded; refused
/// if neither exists. Returns the exit code after printing why (as `verb`).
int make_pci_assignable(Cli& cli, Control& c, std::string_view verb, const PciAddr& a);

// ---- driver domains (pciback as a domain, devices with backend=NAME) ----

/// The domain that is to serve a PCI bus: `name` ("" or "Domain-0": dom0) among `rows`, which
/// must be a driver domain (created with driver_domain = 1). nullopt after printing why (as
/// `verb`): no such domain, or not a driver domain.
std::optional<DomainRow> pci_backend_domain(Cli& cli, std::string_view verb,
                                            std::span<const DomainRow> rows,
                                            const std::string& name);
/// The registry entry of `a` readable by the backend that serves it (pciback checks it before
/// exporting the device) and by nobody else: "n0", plus "r<backend>" for a driver domain.
StoreOp pci_registry_perms(const PciAddr& a, std::uint16_t backend);
/// What a driver domain running pciback will emulate: (address, model) of each
/// `--emulate BDF=MODEL[,opts]` in its argv (pciback refuses to start on a malformed one, so
/// those are skipped here).
std::vector<std::pair<PciAddr, std::string>> pciback_emulated(std::span<const std::string> argv);
/// The first of `devs` that kPciEmulatedDir lists already (dom0's pciback or another driver
/// domain emulates it), nullopt when none is there.
std::optional<PciAddr> emulated_already(Control& c,
                                        std::span<const std::pair<PciAddr, std::string>> devs);
/// The toolstack records the emulated devices of the pciback driver domain `domid` (a driver
/// domain writes nothing in the registry): each entry = its model, owned by dom0, readable by
/// `domid` alone (pciback finds it there and announces nothing itself), with a `backend-id`
/// child = domid by which its destroy finds them again, even after its death took its rights.
Result<void> declare_emulated_registry(Control& c, std::uint16_t domid,
                                       std::span<const std::pair<PciAddr, std::string>> devs);
/// At its destroy: the entries declared for `domid` go.
void revoke_emulated_registry(Control& c, std::uint16_t domid);

// ---- the host's devices (sysfs) ----

/// The driver_override hvctl sets on a device it makes assignable: no host driver may
/// claim it again until it is given back.
inline constexpr std::string_view kPciOverride = "pciback";

/// Host PCI devices under `root` (/sys/bus/pci): existence, driver, unbind and rebind.
class PciHost {
public:
    explicit PciHost(std::string root = "/sys/bus/pci") : root_(std::move(root)) {}
    bool exists(const PciAddr& a) const;
    /// The bound driver's name, "" when none.
    Result<std::string> driver(const PciAddr& a) const;
    /// driver_override = kPciOverride, then unbind from `driver` (when not ""). EOPNOTSUPP,
    /// with nothing changed, when that driver offers no unbind in sysfs.
    Result<void> unbind(const PciAddr& a, const std::string& driver) const;
    /// Clears driver_override, then binds `driver` (when not ""; EINVAL if it is not a plain
    /// driver name).
    Result<void> rebind(const PciAddr& a, const std::string& driver) const;

private:
    Result<void> write_attr(const std::string& path, std::string_view value) const;
    std::string root_;
};

}  // namespace hv::tools
