// blkback's control plane (style.md §3, §12; xen-abi.md §4.10–4.11, §5.4–5.5): Backend watches
// this domain's backend/vbd tree and keeps one BlkDevice per vbd; a BlkDevice runs the xenbus
// state machine, publishes the keys and starts one RingWorker per queue. Layer: L2.
// Threads: everything here runs on the Backend's control thread (run()); start()/stop() and
// the read-only accessors may be called from any thread.
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

#include "blkback/engine.hpp"
#include "blkback/lvm.hpp"
#include "blkback/metrics.hpp"
#include "blkback/request.hpp"
#include "blkback/ring_worker.hpp"
#include "hv/expected.hpp"
#include "hv/spin.hpp"
#include "hv/unique_fd.hpp"
#include "hvmin/client.hpp"
#include "xenbus/backend_driver.hpp"
#include "xenbus/xenbus.hpp"
#include "xenstore/client.hpp"

namespace hv::blk {

struct BackendOptions {
    /// Data mode; nullopt: map when hv-min says this domain is trusted, copy otherwise.
    std::optional<DataMode> mode;
    unsigned max_queues = 0;                ///< multi-queue-max-queues; 0 = number of CPUs
    unsigned max_ring_page_order = 4;       ///< max-ring-page-order (16 pages)
    std::uint16_t max_indirect_segments = 256;  ///< feature-max-indirect-segments
    bool persistent = true;                 ///< offer feature-persistent (map mode only)
    /// Persistent grants cached per ring at most (Linux `max_persistent_grants`); 0: the
    /// ring's size × 11 (every grant its direct requests can name).
    unsigned max_persistent_grants = 0;
    /// A cached grant unused this long is unmapped (Linux `persistent_grant_unused_seconds`).
    std::chrono::milliseconds persistent_grant_idle{60'000};
    /// Map mode: register the frontend's memory as io_uring fixed buffers (zero copy, no
    /// per-I/O page pinning). Off: plain readv/writev into the mapped pages.
    bool fixed_buffers = true;
    /// Polling mode (`--poll-us`): each ring worker spins this long on its ring's req_prod and
    /// on io_uring completions, while work keeps arriving, before sleeping; 0 = event channels
    /// only. A vbd's backend key `poll-us` overrides it. Default: HVKIT_POLL_US.
    std::chrono::microseconds spin = hv::default_spin();
    std::chrono::milliseconds stats_interval{1000};
    UringEngineOptions uring;
    std::vector<std::string> lvm_scan_devices;  ///< restrict LVM scans (empty: all devices)
};

/// How a vbd's storage is opened; each ring gets its own engine from it.
struct StorageSpec {
    enum class Kind : std::uint8_t { path, lvm } kind = Kind::path;
    std::string path;  ///< file or block device (Kind::path)
    std::string vg, lv;
    ReadOnly read_only = ReadOnly::no;
};
/// Parses `params` (file path, block device, `VG/LV`, `/dev/VG/LV`; an `aio:`/`raw:`/`file:`
/// prefix is dropped) with `mode` ("r" read-only unless it has a `w`).
Result<StorageSpec> parse_storage(std::string_view params, std::string_view mode);

/// One vbd. Acts on the state reached, not on the edge; disconnect() is idempotent and runs
/// before every connect().
class BlkDevice final : public xenbus::BackendDevice {
public:
    static Result<std::unique_ptr<BlkDevice>> create(hvmin::Services& hv, xs::Client& xs,
                                                     xenbus::DeviceRef ref,
                                                     const BackendOptions& opt, int halt_fd);
    ~BlkDevice() override;
    BlkDevice(const BlkDevice&) = delete;
    BlkDevice& operator=(const BlkDevice&) = delete;

    /// Re-reads the backend and frontend state and acts on them. False: the device is gone
    /// (its directory was removed, or it closed while `online` is 0): destroy it.
    bool reevaluate() noexcept override;
    /// Checks the rings; a halted ring moves this vbd (only) to Closing with an error node.
    void check_rings() noexcept;
    void on_halt() noexcept override { check_rings(); }
    /// Writes statistics/ if they changed (never recreates a removed directory).
    void write_statistics() noexcept override;
    /// Stops the workers (in-flight I/O drains first), then drops mappings. Idempotent.
    void disconnect() noexcept override;

    const std::string& backend_dir() const noexcept override { return bdir_; }
    const std::string& frontend_state_path() const noexcept override { return fe_state_path_; }
    xenbus::DeviceRef ref() const noexcept { return ref_; }
    bool connected() const noexcept { return !rings_.empty(); }
    RingStatsSnapshot stats() const noexcept;

private:
    BlkDevice(hvmin::Services& hv, xs::Client& xs, xenbus::DeviceRef ref,
              const BackendOptions& opt, int halt_fd);
    Result<void> probe();
    Result<void> connect();
    /// The frontend's transport keys as they are now (queue count, ring order, each queue's
    /// ring refs and event channel), raw: what connect() bound must still be what they say.
    std::string frontend_ring_keys() const;
    Result<std::unique_ptr<BlockEngine>> open_engine() const;
    void fail_device(int err, const std::string& msg) noexcept;

    hvmin::Services& hv_;
    xs::Client& xs_;
    xenbus::DeviceRef ref_;
    const BackendOptions& opt_;
    int halt_fd_;
    std::string bdir_;
    std::string fdir_;
    std::string fe_state_path_;
    DomId frontend_{0};
    bool probed_ = false;
    bool failed_ = false;     // closed on an error; waits for the frontend to close
    DataMode mode_ = DataMode::map;
    StorageSpec storage_;
    std::optional<LvmVolume> lvm_;
    EngineProperties props_;
    DeviceLimits limits_;
    RingStatsSnapshot last_stats_{};
    RingStatsSnapshot retired_stats_{};  // of rings already stopped
    std::string ring_keys_;  // frontend_ring_keys() the rings were connected with ("" = unsure)
    std::optional<xs::ScopedWatch> fe_watch_;
    std::vector<std::unique_ptr<RingWorker>> rings_;  // last member: workers stop first
};

/// All vbds this domain serves: the shared xenbus::BackendDriver over
/// /local/domain/<self>/backend/vbd, making a BlkDevice per vbd.
class Backend final : public xenbus::BackendDriver {
public:
    /// `hv` and `xs` must outlive the Backend. Errors: watch/eventfd failures.
    static Result<std::unique_ptr<Backend>> create(hvmin::Services& hv, xs::Client& xs,
                                                   BackendOptions opt);

private:
    using BackendDriver::BackendDriver;
};

}  // namespace hv::blk
