// Queue: netback's data plane for one queue of one vif (style.md §9): a tx ring and an rx
// ring, one or two event channels (feature-split-event-channels), one engine, on its own
// thread. Layer: L2. create()/stop()/destructor run on the device's control thread; the rings,
// channels, engine and copy pages are used only by the worker thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hvmin/client.hpp"
#include "netback/engine.hpp"
#include "netback/hash.hpp"
#include "netback/mcast.hpp"
#include "netback/metrics.hpp"
#include "netback/tx.hpp"
#include "netback/tx_parse.hpp"

namespace hv::net {

/// Requests taken (on both rings) since a queue's last sleep from which it stream-spins
/// (QueueConfig::stream_spin): a quarter of a one-page tx ring.
inline constexpr unsigned kStreamRequests = 64;

struct QueueConfig {
    DomId frontend{0};
    unsigned index = 0;
    GrantRef tx_ring_ref{0};
    GrantRef rx_ring_ref{0};
    EvtchnPort tx_port{0};  ///< the frontend's port; == rx_port when not split
    EvtchnPort rx_port{0};
    bool split = false;     ///< two channels (event-channel-tx / -rx)
    bool rx_notify = true;  ///< feature-rx-notify: otherwise the rx ring is polled while waiting
    TxConfig tx;
    RxFrontend rx;
    RateLimit rate;
    std::chrono::milliseconds rx_drain_timeout{10000};  ///< Linux rx_drain_timeout_msecs
    std::string name;       ///< "<fe>/<devid>/q<n>" for logs
    DataMode mode = DataMode::copy;
    /// Map mode and the frontend's feature-hvkit-persistent-pool: keep its grants mapped.
    bool persistent_pool = false;
    /// Spin window (hv::SpinPolicy): while work arrived within it, the worker spins on the ring
    /// indices and the engine before sleeping. 0: sleep at once.
    std::chrono::microseconds spin{0};
    /// Stream spin: when the queue would sleep with no spin window left, but has taken at least
    /// kStreamRequests requests since its last sleep (a frontend keeping its rings busy), it
    /// first spins this long on the ring indices, as a spin window would; not while
    /// hv::cpus_oversubscribed(). Such a frontend's next burst usually comes while its vCPU is
    /// awake, and is then taken without the event and wake-up of a sleeping queue. 0: never.
    std::chrono::microseconds stream_spin{0};
    /// The vif's multicast filter, shared by its queues (MCAST extras may come on any queue;
    /// rx frames are checked on every queue). nullptr: no filter.
    std::shared_ptr<McastFilter> mcast;
    /// The vif's rx hash settings (control ring), shared by its queues. nullptr: no hashing.
    std::shared_ptr<const HashState> hash;
};

/// One queue. A hostile frontend (bad producer index, a fatal tx parse result) halts it:
/// halted() turns true, `halt_fd` gets one write, the reason is logged; nothing more is read
/// from or written to its rings.
class Queue {
public:
    /// Maps both rings, binds the channel(s), allocates copy pages (through `svc`, which the
    /// queue owns: pass a Services::clone()), then starts the thread. `halt_fd` is an eventfd
    /// owned by the caller that outlives the queue. Errors: grant map / bind / memory failures.
    static Result<std::unique_ptr<Queue>> create(hvmin::Services svc,
                                                 std::unique_ptr<NetEngine> engine,
                                                 QueueConfig cfg, int halt_fd);
    ~Queue();
    Queue(const Queue&) = delete;
    Queue& operator=(const Queue&) = delete;

    /// Stops and joins the thread (idempotent).
    void stop() noexcept;
    bool halted() const noexcept;
    std::string halt_reason() const;
    VifStatsSnapshot stats() const noexcept;
    /// A new `rate` (applied by the worker at its next wakeup).
    void set_rate(RateLimit r) noexcept;
    /// A new xdp-headroom (the frontend reconfigured; applied by the worker at its next wakeup).
    void set_xdp_headroom(std::uint16_t h) noexcept;

    struct Impl;

private:
    explicit Queue(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::net
