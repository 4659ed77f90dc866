// pciback's control plane (xen-abi.md §7.3–7.4, design §8): Backend watches this domain's
// backend/pci tree and keeps one PciDevice per frontend (backend/pci/<fe>/0). A PciDevice
// exports the devices the toolstack named (dev-i), runs the xenbus state machine with
// hot-plug (Reconfiguring/Reconfigured), maps the frontend's shared page and serves its ops
// one at a time, and routes device interrupts to event channels.
// Layer: L2. Threads: everything runs on the Backend's thread (run()); pciif ops are a slow
// path (Linux serves them from a workqueue), so one thread serves every frontend's ops
// between XenStore events. start()/stop() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "pciback/op.hpp"
#include "pciback/source.hpp"
#include "xenbus/backend_driver.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::pci {

/// One `--emulate BDF=MODEL[,opts]`.
struct EmulatedSpec {
    Bdf bdf;
    std::string model;
    std::string opts;
};
/// Parses "BDF=MODEL[,opts]". Errors: EINVAL.
Result<EmulatedSpec> parse_emulate(std::string_view arg);

struct BackendOptions {
    std::vector<EmulatedSpec> emulated;  ///< devices of the emulated model this backend hosts
    std::filesystem::path sysfs_root = "/sys/bus/pci/devices";
    std::chrono::milliseconds stats_interval{1000};
};

/// The registry shared with the toolstack (tasks pci/pcitools): /hvkit/pci/...
inline constexpr std::string_view kAssignableDir = "/hvkit/pci/assignable";
inline constexpr std::string_view kEmulatedDir = "/hvkit/pci/emulated";

class Host;

/// One frontend's PCI bus (backend/pci/<fe>/0).
class PciDevice final : public xenbus::BackendDevice, public DeviceLookup, public InterruptRouter {
public:
    static Result<std::unique_ptr<PciDevice>> create(Host& be, xenbus::DeviceRef ref);
    ~PciDevice() override;
    PciDevice(const PciDevice&) = delete;
    PciDevice& operator=(const PciDevice&) = delete;

    /// Re-reads both states and the device slots and acts on what it finds. False: the
    /// device is gone (directory removed, or closed with online = 0): destroy it.
    bool reevaluate() noexcept override;
    /// Serves a pending op (if the frontend set XEN_PCIF_active) and forwards device
    /// interrupts. Never blocks.
    void service() noexcept override;
    /// fds that make service() worth calling.
    void pollable(std::vector<int>& out) const override;
    void write_statistics() noexcept override;
    /// Unmaps the shared page, closes channels, resets every exported device. Idempotent.
    void disconnect() noexcept override;

    const std::string& backend_dir() const noexcept override { return bdir_; }
    const std::string& frontend_state_path() const noexcept override { return fe_state_path_; }
    bool connected() const noexcept { return shared_.valid(); }
    std::size_t exported() const noexcept { return exports_.size(); }

    // DeviceLookup, InterruptRouter
    Exported* find(std::uint32_t domain, std::uint32_t bus, std::uint32_t devfn) noexcept override;
    Result<std::uint32_t> bind(Exported& dev, unsigned vector) override;
    void release(Exported& dev) noexcept override;

private:
    PciDevice(Host& be, xenbus::DeviceRef ref);
    Result<void> export_slot(unsigned i);
    void unexport(Bdf phys) noexcept;  // by value: callers pass a member of what it erases
    /// Grants each memory BAR and the ROM (read-only) of `e` to the frontend (hv-min iomem).
    void grant_bars(Exported& e) noexcept;
    /// `bar-<index>-<n>` = handle for each granted BAR.
    std::vector<std::pair<std::string, std::string>> bar_keys(const Exported& e) const;
    /// Revokes them, removes their keys, gives the source fresh memory.
    void revoke_bars(Exported& e) noexcept;
    Result<void> publish_roots();
    Result<void> setup_backend();
    Result<void> reconfigure();
    Result<void> connect();
    void fail_device(int err, const std::string& msg) noexcept;

    Host& be_;
    xenbus::DeviceRef ref_;
    std::string bdir_, fdir_, fe_state_path_;
    bool probed_ = false;
    bool exported_ = false;  // setup_backend done
    bool failed_ = false;
    std::map<std::string, OpCounters> last_stats_;
    std::optional<xs::ScopedWatch> fe_watch_;
    // Teardown order (reverse of declaration): interrupt channels, then the op channel, then
    // the shared page; exported devices (and their sources) last.
    std::vector<std::unique_ptr<Exported>> exports_;
    hvmin::GrantMapping shared_;
    hvmin::EventChannelBinding evtchn_;
    struct Vector {
        Exported* dev;
        unsigned vector;
        hvmin::EventChannelBinding port;
    };
    std::vector<Vector> vectors_;
};

/// What the PciDevices of one backend share (the DeviceFactory of its driver): services,
/// options, and which host devices are in use. Records the emulated devices in the registry
/// (publish_emulated()) and removes them when destroyed, after every device is gone.
class Host final : public xenbus::DeviceFactory {
public:
    /// `hv`, `xs` must outlive the Host.
    Host(hvmin::Services& hv, xs::Client& xs, BackendOptions opt) noexcept
        : hv_(hv), xs_(xs), opt_(std::move(opt)) {}
    ~Host() override;
    Host(const Host&) = delete;
    Host& operator=(const Host&) = delete;

    Result<void> publish_emulated();
    Result<std::unique_ptr<xenbus::BackendDevice>> make_device(xenbus::DeviceRef ref,
                                                               int halt_fd) override;
    bool is_own_key(std::string_view path) const noexcept override;

private:
    friend class PciDevice;
    /// A fresh source for `bdf`: emulated if this backend hosts it, else a host device that
    /// the toolstack made assignable. Errors: ENODEV (not assignable), EBUSY (in use).
    Result<std::unique_ptr<DeviceSource>> open_source(const Bdf& bdf, std::string& why);

    hvmin::Services& hv_;
    xs::Client& xs_;
    BackendOptions opt_;
    std::set<Bdf> in_use_;
};

/// Every frontend's PCI bus this domain serves: the shared xenbus::BackendDriver over
/// /local/domain/<self>/backend/pci, making a PciDevice per bus.
class Backend final : public xenbus::BackendDriver {
public:
    /// Records the emulated devices in the registry. `hv`, `xs` must outlive the Backend.
    /// Destroyed: stopped; devices disconnected and reset; registry entries removed.
    static Result<std::unique_ptr<Backend>> create(hvmin::Services& hv, xs::Client& xs,
                                                   BackendOptions opt);

private:
    using BackendDriver::BackendDriver;
};

}  // namespace hv::pci
