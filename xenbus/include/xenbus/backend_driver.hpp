// The part every backend program shares (blkback, netback, pciback): watch this domain's
// backend/<type> tree, make one device object per device directory, re-evaluate a device when
// its backend or frontend directory changes, drop it when its directory goes, write
// statistics periodically, and stop on request. What differs per type (how a device is made,
// which keys are echoes of the backend's own writes) is a DeviceFactory. Layer: L1.5 (xenbus;
// knows nothing of hv-min: the factory brings its own services).
// Threads: the loop (run(), or the thread start() makes) is the control thread; devices and
// the factory's make_device() run only on it. start(), stop() and device_count() may be called
// from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::xenbus {

/// One device directory a backend serves (a vbd, a vif, a frontend's PCI bus). Acts on the
/// state reached, not on the edge (style.md §3). Called on the control thread only.
class BackendDevice {
public:
    virtual ~BackendDevice() = default;
    /// Re-reads both sides' state and acts on it. False: the device is gone (its directory was
    /// removed, or it closed while `online` is 0): the driver destroys it.
    virtual bool reevaluate() noexcept = 0;
    /// Stops the data plane and releases what the frontend gave. Idempotent.
    virtual void disconnect() noexcept = 0;
    /// Writes statistics/ if they changed (never recreates a removed directory).
    virtual void write_statistics() noexcept = 0;
    /// The driver's halt eventfd fired (some data-plane worker halted): find which and act.
    virtual void on_halt() noexcept {}
    /// Work that is not a XenStore event: called once per loop pass (after any wake-up).
    virtual void service() noexcept {}
    /// fds that make service() worth calling; appended to `out`.
    virtual void pollable(std::vector<int>& out) const { (void)out; }

    virtual const std::string& backend_dir() const noexcept = 0;
    /// The frontend's `state` node: its events (and those below it) re-evaluate this device.
    virtual const std::string& frontend_state_path() const noexcept = 0;
    /// Another frontend node this device watches itself (netback: the frontend's
    /// `request-multicast-control`): true when `path`'s events should re-evaluate it too.
    virtual bool watches_frontend_node(const std::string& path) const noexcept {
        (void)path;
        return false;
    }
};

/// The per-type part of a backend. Lives as long as the driver; its devices die first.
class DeviceFactory {
public:
    virtual ~DeviceFactory() = default;
    /// A device for a complete directory (it has `state`, and `online` is not 0). `halt_fd` is
    /// the driver's eventfd a data-plane worker writes to when it halts (see on_halt()).
    virtual Result<std::unique_ptr<BackendDevice>> make_device(DeviceRef ref, int halt_fd) = 0;
    /// True for a path below the backend tree that only this backend writes (feature keys,
    /// hotplug-status): its watch event is an echo and is ignored. statistics/ is always ignored.
    virtual bool is_own_key(std::string_view path) const noexcept {
        (void)path;
        return false;
    }
};

/// A Result of a derived object as one of its base (a device as BackendDevice, a type's Backend
/// as BackendDriver).
template <class Base, class Derived>
Result<std::unique_ptr<Base>> upcast(Result<std::unique_ptr<Derived>>&& r) {
    if (!r) {
        return fail(r.error());
    }
    return std::unique_ptr<Base>(std::move(*r));
}

/// The factory of a device type made as `Device::create(services, xs, ref, options, halt_fd)`
/// (blkback's BlkDevice, netback's VifDevice): owns the options its devices borrow.
template <class Device, class Services, class Options>
class DeviceFactoryOf final : public DeviceFactory {
public:
    using OwnKey = bool (*)(std::string_view path) noexcept;
    /// `hv` and `xs` must outlive the factory. `own_key`: see is_own_key (may be null).
    DeviceFactoryOf(Services& hv, xs::Client& xs, Options opt, OwnKey own_key) noexcept
        : hv_(hv), xs_(xs), opt_(std::move(opt)), own_key_(own_key) {}

    Result<std::unique_ptr<BackendDevice>> make_device(DeviceRef ref, int halt_fd) override {
        return upcast<BackendDevice>(Device::create(hv_, xs_, ref, opt_, halt_fd));
    }
    bool is_own_key(std::string_view path) const noexcept override {
        return own_key_ != nullptr && own_key_(path);
    }

private:
    Services& hv_;
    xs::Client& xs_;
    Options opt_;
    OwnKey own_key_;
};

/// On stop, a device whose backend state is Closing is first marked Closed (as Linux with
/// allow_rebind: others keep their state, so a restarted backend reconnects them).
enum class CloseOnStop : bool { no, yes };

struct DriverConfig {
    std::string_view type;  ///< "vbd", "vif", "pci": the backend/<type> tree
    std::string_view name;  ///< "blkback": log prefix and watch token
    std::chrono::milliseconds stats_interval{1000};
    CloseOnStop close_on_stop = CloseOnStop::yes;
};

/// Serves every device of one type whose backend is domain `self`.
class BackendDriver {
public:
    /// `xs` must outlive the driver. Errors: eventfd or watch failures.
    static Result<std::unique_ptr<BackendDriver>> create(DomId self, xs::Client& xs,
                                                         const DriverConfig& cfg,
                                                         std::unique_ptr<DeviceFactory> factory);
    virtual ~BackendDriver();  ///< stop(), then every device disconnects
    BackendDriver(const BackendDriver&) = delete;
    BackendDriver& operator=(const BackendDriver&) = delete;

    /// Serves on the calling thread until stop(). Errors: the XenStore connection was lost.
    Result<void> run() noexcept;
    /// run() on an internal thread.
    void start();
    /// Makes run() return; joins the internal thread; disconnects every device. Idempotent.
    void stop() noexcept;
    std::size_t device_count() const noexcept { return device_count_.load(); }

protected:
    /// For a type's own Backend class, which adds only a typed create() that calls make().
    BackendDriver(DomId self, xs::Client& xs, const DriverConfig& cfg,
                  std::unique_ptr<DeviceFactory> factory) noexcept;
    Result<void> init();
    /// A `B` (derived, inheriting these constructors) made and initialised as create() does.
    template <class B>
    static Result<std::unique_ptr<B>> make(DomId self, xs::Client& xs, const DriverConfig& cfg,
                                           std::unique_ptr<DeviceFactory> factory) {
        std::unique_ptr<B> b(new B(self, xs, cfg, std::move(factory)));
        HV_TRY(b->init());
        return b;
    }

private:
    void on_event(const std::string& path) noexcept;
    bool is_echo(const std::string& path) const noexcept;
    void adopt(DeviceRef ref) noexcept;
    void rescan() noexcept;
    void drop_devices() noexcept;

    DomId self_;
    xs::Client& xs_;
    std::string type_;
    std::string name_;
    std::chrono::milliseconds stats_interval_;
    CloseOnStop close_on_stop_;
    std::string root_;
    UniqueFd stop_fd_;
    UniqueFd halt_fd_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::size_t> device_count_{0};
    // Destroyed in reverse: the thread is joined (by stop()) before anything goes; devices die
    // before the factory that made them (they may borrow its options and services).
    std::unique_ptr<DeviceFactory> factory_;
    std::optional<xs::ScopedWatch> root_watch_;
    std::map<DeviceRef, std::unique_ptr<BackendDevice>> devices_;
    std::jthread thread_;
};

}  // namespace hv::xenbus
