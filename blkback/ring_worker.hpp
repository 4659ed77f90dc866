// RingWorker: blkback's data plane for one ring (style.md §9, §12). Layer: L2. Created and
// destroyed by the BlkDevice on its control thread; everything else runs on the worker's own
// thread, which owns the ring mapping, the event channel, the engine and the request pool.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blkback/engine.hpp"
#include "blkback/metrics.hpp"
#include "blkback/request.hpp"
#include "hv/expected.hpp"
#include "hv/strong.hpp"
#include "hvmin/client.hpp"

namespace hv::blk {

/// How the worker reaches the frontend's data pages.
enum class DataMode : std::uint8_t {
    map,   ///< trusted backend: GNTTABOP_map_grant_ref (zero copy; persistent grants possible)
    copy,  ///< isolated backend: batched GNTTABOP_copy to and from the worker's bounce pages
};

struct RingConfig {
    DomId frontend{0};
    unsigned queue = 0;                  ///< queue number (logs)
    std::vector<GrantRef> ring_refs;     ///< 1..16 pages, in ring order
    EvtchnPort port{0};                  ///< the frontend's port (bound here)
    BlkifAbi abi = BlkifAbi::native;
    DataMode mode = DataMode::map;
    bool persistent = false;             ///< negotiated feature-persistent (map mode only)
    unsigned max_persistent_grants = 0;  ///< cache bound; 0: ring size × 11
    bool fixed_buffers = true;           ///< map mode: frontend extents as io_uring fixed buffers
    std::chrono::milliseconds persistent_grant_idle{60'000};  ///< unused this long: unmapped
    /// Polling mode: after a pass that found work, spin this long on the ring's req_prod and
    /// on the engine's completions before the final check and the sleep (0: never spin).
    std::chrono::microseconds spin{0};
    DeviceLimits limits;
    std::string name;                    ///< "<fe>/<devid>/q<n>" for logs
};

/// One ring: drain → parse → submit → reap → respond → notify → final check → wait.
/// A hostile producer index halts the ring (halted() turns true, `halt_fd` gets one write,
/// the reason is logged); in-flight I/O still drains. Destruction stops the thread, waits
/// (bounded) for the engine's in-flight I/O, then unmaps grants, the ring and the channel.
class RingWorker {
public:
    /// Maps the ring pages and binds the event channel (on the caller's thread, through `svc`,
    /// which the worker then owns: pass a Services::clone()), then starts the thread.
    /// `halt_fd` (an eventfd owned by the caller, outliving the worker) is written on a halt.
    /// Errors: grant map / bind failures, bad ring size.
    static Result<std::unique_ptr<RingWorker>> create(hvmin::Services svc,
                                                      std::unique_ptr<BlockEngine> engine,
                                                      RingConfig cfg, int halt_fd);
    ~RingWorker();
    RingWorker(const RingWorker&) = delete;
    RingWorker& operator=(const RingWorker&) = delete;

    /// Stops and joins the thread (idempotent). In-flight I/O is drained first.
    void stop() noexcept;
    bool halted() const noexcept;
    /// Why the ring halted (empty while it has not). Valid once halted() is true.
    std::string halt_reason() const;
    RingStatsSnapshot stats() const noexcept;
    unsigned ring_size() const noexcept;
    /// Persistent grants currently cached (tests).
    std::size_t persistent_grants() const noexcept;

    struct Impl;

private:
    explicit RingWorker(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::blk
