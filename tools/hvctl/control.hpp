// The toolstack operations hvctl's verbs need, as an interface so the CLI (parsing, help,
// formatting) builds and tests apart from hv-min; control_hvmin.cpp implements it with
// hvmin::Toolstack. Layer: tools. One thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "hv/expected.hpp"

namespace hv::tools {

/// One row of `hvctl list`.
struct DomainRow {
    std::uint16_t domid = 0;
    std::string name;
    std::uint64_t memory_pages = 0;  // 4096-byte pages
    char state = 'r';                // xl's flag letter: r running, d dying, s shut down
    std::uint64_t cpu_time_ns = 0;
    std::uint32_t vcpus = 1;  // threads of the domain's process
    pid_t pid = -1;
    bool trusted = false;
    bool driver_domain = false;
    std::uint64_t target_kib = 0;      // memory/target (0: not written)
    std::uint64_t static_max_kib = 0;  // memory/static-max (0: not written)
};

/// What `create` asks for, already resolved from the domain file.
struct CreateSpec {
    std::string name;
    std::uint64_t memory_pages = 0;
    std::vector<std::string> argv;  // argv[0] = absolute path of the program
    std::vector<std::string> env;
    bool trusted = false;
    bool driver_domain = false;
};

/// One split device the toolstack writes for a domain (libxl_device.c layout).
struct DeviceReq {
    std::string type;            // "vbd", "vif", "pci"
    std::string backend_domain;  // name; "" = Domain-0
    std::uint32_t devid = 0;
    std::map<std::string, std::string> backend_keys;
    std::map<std::string, std::string> frontend_keys;
};

/// One step of a XenStore transaction the toolstack builds (Control::store_transaction).
struct StoreOp {
    enum class Kind {
        expect,  ///< the node must read exactly `value`, else the transaction is abandoned
        write,   ///< write `value` (creating the node: it inherits its parent's permissions)
        remove,  ///< remove the node and its subtree (absent is fine)
        set_perms,  ///< set the node's permissions to `value`: "n0 r5 ..." (xen-abi §4.5)
    };
    Kind kind = Kind::write;
    std::string path;
    std::string value;
    friend bool operator==(const StoreOp&, const StoreOp&) = default;
};

/// How a domain ended, as hv-min reports it (`Control::wait_for_death`).
struct DomainEnd {
    enum class How { exited, killed, destroyed, disconnected };
    How how = How::exited;
    int status = 0;  ///< exit code (exited) or signal number (killed)
    /// xl's shutdown reason: a program that exits with 0 powered off; anything else (a
    /// signal, a non-zero exit, a closed hypercall socket) crashed. `destroyed` is neither.
    bool crashed() const noexcept { return !(how == How::exited && status == 0); }
};

/// A device found under a domain's `device/` directory.
struct AttachedDevice {
    std::string type;
    std::uint16_t backend = 0;
    std::uint32_t devid = 0;
};

class Control {
public:
    virtual ~Control() = default;
    /// Live domains, dom0 first.
    virtual Result<std::vector<DomainRow>> list() = 0;
    virtual Result<std::uint16_t> create(const CreateSpec& spec) = 0;
    /// Destroys the domain and returns once it is gone (bounded by `timeout`).
    virtual Result<void> destroy(std::uint16_t domid, std::chrono::milliseconds timeout) = 0;
    /// Waits (bounded by `timeout`; ETIMEDOUT then) for domain `domid` to end; a death hv-min
    /// saw recently is answered at once, an unknown domid with ESRCH.
    virtual Result<DomainEnd> wait_for_death(std::uint16_t domid,
                                             std::chrono::milliseconds timeout) = 0;
    /// Creates the device's frontend and backend directories for `domid` (EEXIST if present,
    /// ENOENT if `backend_domain` names no domain).
    virtual Result<void> add_device(std::uint16_t domid, const DeviceReq& dev) = 0;
    /// The vbd/vif/pci devices of `domid` (from its frontend `device/` tree; GUEST: entries that
    /// do not parse are skipped).
    virtual Result<std::vector<AttachedDevice>> devices(std::uint16_t domid) = 0;
    /// Asks each device to close and waits (bounded by `timeout`) for its backend to reach
    /// Closed. Returns how many did not.
    virtual std::size_t close_devices(std::uint16_t domid, const std::vector<AttachedDevice>& devs,
                                      std::chrono::milliseconds timeout) = 0;
    /// Removes the frontend and backend directories of each device (missing ones are fine).
    virtual Result<void> remove_devices(std::uint16_t domid,
                                        const std::vector<AttachedDevice>& devs) = 0;
    /// Writes the domain's memory/static-max (when given) and memory/target, in KiB, as
    /// libxl does (dom0's keys in the domain's home, readable by the domain).
    virtual Result<void> set_memory(std::uint16_t domid, std::optional<std::uint64_t> static_max_kib,
                                    std::uint64_t target_kib) = 0;
    /// Every device directory under `/local/domain/<backend>/backend/{vbd,vif,pci}`: the devices
    /// domain `backend` serves (GUEST-free: the toolstack wrote these paths; entries that do
    /// not parse are skipped). Pairs of (frontend domid, device).
    virtual Result<std::vector<std::pair<std::uint16_t, AttachedDevice>>> served_devices(
        std::uint16_t backend) = 0;
    /// Reads one XenStore node as dom0 (ENOENT if absent).
    virtual Result<std::string> read_store(const std::string& path) = 0;
    /// Removes one XenStore node and its subtree as dom0 (ENOENT if absent).
    virtual Result<void> remove_store(const std::string& path) = 0;
    /// Lists one XenStore directory as dom0 (ENOENT if absent).
    virtual Result<std::vector<std::string>> list_store(const std::string& path) = 0;
    /// One XenStore node's permissions as dom0, owner first ("n0", "r5", ...; ENOENT if absent).
    virtual Result<std::vector<std::string>> read_perms(const std::string& path) = 0;
    /// Runs `ops` in order in one XenStore transaction as dom0, retried on conflict. An
    /// `expect` that does not hold abandons it with ECANCELED (nothing written): the caller
    /// re-reads and builds the ops again.
    virtual Result<void> store_transaction(const std::vector<StoreOp>& ops) = 0;
    /// Where the hv-min control socket lives (for messages and `info`).
    virtual std::string rundir() const = 0;
};

/// Connects on first use, so verbs that fail on their arguments never touch hv-min.
using ControlFactory = std::function<Result<std::unique_ptr<Control>>()>;

}  // namespace hv::tools
