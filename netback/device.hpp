// netback's control plane (style.md §3, §12; xen-abi.md §4.10–4.11, §6.6): Backend watches this
// domain's backend/vif tree and keeps one VifDevice per vif; a VifDevice runs the xenbus state
// machine as Linux netback: at probe (InitWait) it creates the host side (tap `vif<fe>.<devid>`
// on a Linux or OVS bridge) and writes hotplug-status (`connected`, or `error` + hotplug-error);
// netfront skips Initialised: we connect on frontend Connected and publish Connected only once
// hotplug-status reads `connected`. A DPDK vif's vhost-user port, or a loop or sink engine,
// is made at connect, with one Queue per queue. Layer: L2. Threads: everything runs on the Backend's control thread (run()); start()/
// stop() and the read-only accessors may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hv/expected.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/ring.hpp"
#include "netback/ctrl.hpp"
#include "netback/hash.hpp"
#include "netback/mcast.hpp"
#include "netback/metrics.hpp"
#include "netback/queue.hpp"
#include "netback/steer.hpp"
#include "xenbus/backend_driver.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::net {

class Tap;
class DpdkPort;

/// Where a vif's frames go on the host.
enum class HostMode : std::uint8_t {
    tap,   ///< a tap per vif (IFF_VNET_HDR), attached to the `bridge` key's bridge
    loop,  ///< every frame the frontend sends comes back to it (tests, benchmarks)
    sink,  ///< every frame the frontend sends is taken and dropped (make_sink_engine)
};

struct BackendOptions {
    HostMode host = HostMode::tap;
    unsigned max_queues = 0;  ///< multi-queue-max-queues; 0 = min(8, number of CPUs)
    bool split_event_channels = true;  ///< offer feature-split-event-channels
    /// The network namespace taps and bridges live in (-1: the one netback runs in). Not owned.
    int netns_fd = -1;
    /// OVS database socket for `type=ovs` vifs ("unix:/path/db.sock"); empty: OVS not available.
    std::string ovs_db;
    std::chrono::milliseconds stats_interval{1000};
    std::chrono::milliseconds rx_drain_timeout{10000};
    /// How packet bytes move; nullopt: map when hv-min says this domain is trusted, else copy.
    /// map on an isolated domain falls back to copy (it cannot map data pages).
    std::optional<DataMode> mode;
    /// Each queue's spin window (hv::SpinPolicy) before it sleeps; a vif's `poll-us` backend
    /// key overrides it. Default: the process default (HVKIT_POLL_US).
    std::chrono::microseconds spin = hv::default_spin();
    /// Each queue's stream spin (QueueConfig::stream_spin; 0: none), whatever the spin window.
    std::chrono::microseconds stream_spin{20};
    /// Map mode: offer feature-hvkit-persistent-pool (keep a frontend's pool grants mapped
    /// while connected, README "Persistent pool"). false: map and unmap per batch.
    bool persistent_pool = true;
    /// What frontends may send us (xen-abi §6.6): IPv4 partial checksums (false: we write
    /// feature-no-csum-offload = 1), IPv6 ones (feature-ipv6-csum-offload), TSO per IP version
    /// (feature-gso-tcpv4/-v6, offered only with that version's checksum offload). A frame
    /// asking for what was not offered is dropped with an error (netback/README.md, tx table).
    /// All on by default, as Linux netback; `--no-gso`, `--no-ipv6-csum`, `--no-csum-offload`.
    TxConfig tx_offers;
};

/// One vif. Acts on the state reached, not on the edge; disconnect() is idempotent and runs
/// before every connect().
class VifDevice final : public xenbus::BackendDevice {
public:
    static Result<std::unique_ptr<VifDevice>> create(hvmin::Services& hv, xs::Client& xs,
                                                     xenbus::DeviceRef ref,
                                                     const BackendOptions& opt, int halt_fd);
    ~VifDevice() override;
    VifDevice(const VifDevice&) = delete;
    VifDevice& operator=(const VifDevice&) = delete;

    /// Re-reads both states (and `rate`) and acts on them. False: the device is gone.
    bool reevaluate() noexcept override;
    /// A halted queue disables this vif (only): Closing with an error node.
    void check_queues() noexcept;
    void on_halt() noexcept override { check_queues(); }
    /// Writes statistics/ if they changed (never recreates a removed directory).
    void write_statistics() noexcept override;
    /// Stops the queues, then removes the host side. Idempotent.
    void disconnect() noexcept override;
    /// A DPDK vif connected before any switch attached: its port's link-state fd.
    void pollable(std::vector<int>& out) const override;
    /// A DPDK vif waiting for its switch: once the link is up, `hotplug-status = connected`
    /// and Connected follow (frames sent before would only be dropped).
    void service() noexcept override;

    const std::string& backend_dir() const noexcept override { return bdir_; }
    const std::string& frontend_state_path() const noexcept override { return fe_state_path_; }
    bool watches_frontend_node(const std::string& path) const noexcept override {
        return path == fe_mcast_path_;
    }
    xenbus::DeviceRef ref() const noexcept { return ref_; }
    bool connected() const noexcept { return !queues_.empty(); }
    VifStatsSnapshot stats() const noexcept;
    /// The control ring's hash settings (nullptr: no control ring).
    const HashSettings* hash_settings() const noexcept { return ctrl_ ? &ctrl_->settings() : nullptr; }
    /// This connection's multicast filter (nullptr while not connected).
    std::shared_ptr<const McastFilter> mcast_filter() const noexcept { return mcast_; }

private:
    VifDevice(hvmin::Services& hv, xs::Client& xs, xenbus::DeviceRef ref,
              const BackendOptions& opt, int halt_fd);
    Result<void> probe();
    Result<void> connect();
    /// At probe, after InitWait: the host side (tap mode: plug_host()), then `hotplug-status`
    /// = `connected`, or `error` with `hotplug-error` (the vif then stays in InitWait).
    void hotplug() noexcept;
    /// The tap with max_queues() queues, its MAC, MTU, bridge or OVS port, up. `step`: what
    /// it was doing (for hotplug-error).
    Result<void> plug_host(std::string& step);
    /// Removes what plug_host() made (OVS port, tap). Idempotent.
    void unplug_host() noexcept;
    bool hotplug_connected() const;
    std::string backend_value(const char* key) const;
    /// At connect: one engine per queue (the tap's queues, the DPDK port, loop or sink).
    Result<std::vector<std::unique_ptr<NetEngine>>> make_engines(unsigned queues,
                                                                 const Features& f);
    void fail_device(int err, const std::string& msg) noexcept;
    unsigned max_queues() const noexcept;
    DataMode data_mode() const noexcept;
    bool offers_persistent_pool() const noexcept;
    /// opt_.tx_offers with TSO only where its checksum offload is offered.
    TxConfig offered_tx() const noexcept;

    hvmin::Services& hv_;
    xs::Client& xs_;
    xenbus::DeviceRef ref_;
    const BackendOptions& opt_;
    int halt_fd_;
    std::string bdir_;
    std::string fdir_;
    std::string fe_state_path_;
    bool probed_ = false;
    bool failed_ = false;
    RateLimit rate_{};
    VifStatsSnapshot last_stats_{};
    VifStatsSnapshot retired_stats_{};
    std::optional<xs::ScopedWatch> fe_watch_;
    /// The frontend's `request-multicast-control`, watched while connected (Linux
    /// xen_register_mcast_ctrl_watch: feature-dynamic-multicast-control).
    std::string fe_mcast_path_;
    std::optional<xs::ScopedWatch> mcast_watch_;
    /// This connection's multicast list (Linux frees it at disconnect), shared with the queues.
    std::shared_ptr<McastFilter> mcast_;
    /// This connection's rx hash settings, published by serve_ctrl() for the queues' rx paths.
    std::shared_ptr<HashState> hash_;
    /// A multi-queue tap vif with Toeplitz set: the tap's steering program (steer.hpp) picks
    /// the rx queue the mapping names; detached when the algorithm goes back to NONE and at
    /// disconnect. Made at the first need; a failure (no bpf()) is logged once per connection
    /// and the kernel's own queue choice stays.
    void update_steering() noexcept;
    void stop_steering() noexcept;
    std::optional<SteeringProgram> steer_;
    bool steering_ = false;
    bool steer_failed_ = false;
    /// The control ring (xen-abi §6.7), when the frontend gave `ctrl-ring-ref` and
    /// `event-channel-ctrl`: served on the control thread (service()), answers grant-copied
    /// through ctrl_page_ (one own frame).
    Result<void> connect_ctrl(unsigned queues);
    void serve_ctrl() noexcept;
    hvmin::GrantMapping ctrl_map_;
    std::optional<rings::BackRing<rings::NetifCtrlProtocol>> ctrl_ring_;
    hvmin::EventChannelBinding ctrl_ev_;
    std::optional<CtrlHandler> ctrl_;
    std::uint64_t ctrl_frame_ = 0;
    std::byte* ctrl_page_ = nullptr;
    /// A DPDK vif (`script=vif-dpdk` or `type=dpdk`): its `bridge` key is the vhost-user
    /// socket path. Decided at probe (what we offer depends on it): dpdk_.
    bool dpdk_vif() const;
    bool dpdk_ = false;
    bool awaiting_link_ = false;  // connected, hotplug-status held back until the switch is there
    unsigned mtu_ = 1500;                       // the `mtu` key, read at probe
    std::unique_ptr<Tap> tap_;                  // host side, from probe until the vif goes
    std::unique_ptr<DpdkPort> port_;            // or this (DPDK vif); also after the queues
    std::string ovs_bridge_;                    // non-empty: port added to this OVS bridge
    std::vector<std::unique_ptr<Queue>> queues_;  // last member: queues stop first
};

/// Every vif this domain serves: the shared xenbus::BackendDriver over
/// /local/domain/<self>/backend/vif, making a VifDevice per vif.
class Backend final : public xenbus::BackendDriver {
public:
    /// `hv` and `xs` must outlive the Backend.
    static Result<std::unique_ptr<Backend>> create(hvmin::Services& hv, xs::Client& xs,
                                                   BackendOptions opt);

private:
    using BackendDriver::BackendDriver;
};

}  // namespace hv::net
