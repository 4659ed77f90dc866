// libblkfront: the guest side of the blkif protocol (xen-abi.md §4.11, §5; design §9).
// One Device per vbd: the xenbus handshake (control path) and 1..N queues, each a shared ring
// with its event channel and a pool of granted data pages (data path).
// Layer: frontends (links hv::rings, hv::hvmin_client, hv::xenbus). Threads: a Device is driven
// by ONE thread (hv-guest's I/O thread): every member, control and data path, from that thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "hv/expected.hpp"
#include "hv/spin.hpp"
#include "hv/strong.hpp"
#include "hv/rings/xenbus.hpp"

namespace hv::hvmin {
class Services;
}
namespace hv::xs {
class Client;
}

namespace hv::blkfront {

/// Errors of libblkfront (category "hv.blkfront").
enum class Errc {
    not_connected = 1,  ///< submit() before Connected, or after the device died
    bad_request,        ///< misaligned offset/length, beyond the disk, empty buffer
    read_only,          ///< write/discard on a read-only vbd
    backend_protocol,   ///< the backend broke the protocol (bad key, bad response): device dead
    device_gone,        ///< the device was removed (backend online=0 / directory gone)
    timed_out,          ///< the handshake did not finish in time
};
const std::error_category& category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

/// What this frontend offers at most (Linux blkfront's module parameters).
struct Options {
    unsigned max_ring_page_order = 4;     ///< own max; used: min(own, backend's max-ring-page-order)
    unsigned max_queues = 0;              ///< own max (0: one per CPU); used: min(own, backend's multi-queue-max-queues)
    bool persistent = true;               ///< write feature-persistent=1 (data pages granted RW, reused)
    unsigned max_indirect_segments = 32;  ///< own cap on the backend's feature-max-indirect-segments
    unsigned pool_pages_per_queue = 256;  ///< granted bounce pages per queue (grant-table budget)
    /// Polling mode: spin_for_responses() spins this long on the rings' response producers,
    /// while responses keep arriving, before the caller sleeps (0: never). Default: HVKIT_POLL_US.
    std::chrono::microseconds spin = hv::default_spin();
};

/// What the backend published at Connected (xen-abi.md §5.4), and what was negotiated.
struct DiskInfo {
    std::uint64_t sectors = 0;      ///< capacity in 512-byte units
    std::uint32_t sector_size = 512;
    std::uint32_t physical_sector_size = 512;
    std::uint32_t info = 0;         ///< VDISK_* bits
    bool read_only = false;         ///< VDISK_READONLY in info, or backend mode without 'w'
    bool flush = false;             ///< feature-flush-cache
    bool barrier = false;           ///< feature-barrier
    bool discard = false;           ///< feature-discard
    bool discard_secure = false;
    std::uint32_t discard_granularity = 0;
    std::uint32_t discard_alignment = 0;
    bool persistent = false;        ///< both sides offered feature-persistent
    unsigned indirect_segments = 0; ///< negotiated segments per INDIRECT request (0: none)
    unsigned queues = 1;
    unsigned ring_pages = 1;
    std::uint64_t size_bytes() const noexcept { return sectors * 512U; }
};

enum class Op : std::uint8_t { read, write, flush, discard };

/// One I/O. offset/length in bytes, multiples of sector_size. read: `buf` receives `length`
/// bytes; write: `buf` holds them; flush/discard: no buffer. The buffer must stay valid until
/// the completion. It is any memory of the program (data then moves through granted pool
/// pages, one copy), or memory from Device::alloc_buffer() used in place (no copy).
struct Io {
    Op op = Op::read;
    std::uint64_t offset_bytes = 0;
    std::uint64_t length = 0;
    std::byte* buf = nullptr;
    std::uint64_t cookie = 0;  ///< handed back in the completion
};

/// status: 0, -EIO (backend error), -EOPNOTSUPP (backend refused the op; the feature is then
/// turned off), -ENODEV (device removed with the I/O outstanding).
using CompletionFn = std::function<void(std::uint64_t cookie, int status)>;

/// Where the device is in its life.
enum class Phase : std::uint8_t {
    waiting,      ///< handshake in progress (waiting for the backend)
    connected,    ///< I/O flows
    reconnecting, ///< backend went away; outstanding I/O is kept and re-issued on reconnect
    dead,         ///< removed or broken: every I/O completed with an error
};

class Device {
public:
    /// Prepares the vbd `devid` of this domain (frontend dir device/vbd/<devid>): reads its
    /// backend path/id, watches both `state` nodes with tokens "blkfront/<devid>". Nothing is
    /// granted before the backend reaches InitWait. `xs` and `hv` must outlive the Device.
    static Result<std::unique_ptr<Device>> create(hvmin::Services& hv, xs::Client& xs,
                                                  std::uint32_t devid, Options o,
                                                  CompletionFn on_complete);
    ~Device();  ///< Closes: switches to Closed, revokes grants, closes ports. Outstanding I/O: -ENODEV.
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    /// Re-reads both sides' state and acts on the state reached (call on any watch event whose
    /// token is watch_token(), and after create()). Errors are also reflected in phase().
    Result<void> on_state_change();
    /// Runs on_state_change() on each watch event for this device until `phase()` is not
    /// waiting, for programs that connect one disk before doing I/O. Other watch events are
    /// passed to `other` (may be empty). Errors: Errc::timed_out, device errors.
    Result<void> wait_connected(std::chrono::milliseconds timeout,
                                const std::function<void(const std::string& path,
                                                         const std::string& token)>& other = {});

    /// In-place I/O memory: `bytes` (rounded up to 4 KiB pages) of this domain's own memory,
    /// page aligned, valid as long as the Device (frames are never given back). An Io whose
    /// `buf` starts in such a buffer at a 4 KiB boundary, with all of its `length` inside it,
    /// moves data straight between the buffer and the backend: a read completes into the
    /// buffer, a write goes from it, with no copy through the queue's pool. Its pages are
    /// granted the way the pool's are: with persistent grants once, read-write, until the
    /// device closes or reconnects, so the backend can write them at any time meanwhile (the
    /// pool's copy-out is the defence against that; in place trades it for the copy); without,
    /// per request, revoked at the response. Errors: hv-min's (memory).
    Result<std::span<std::byte>> alloc_buffer(std::size_t bytes);

    /// Queues one I/O. Success: exactly one completion will come (from poll(), or from
    /// on_state_change() / the destructor when the device dies). Failure: nothing queued.
    /// Large I/Os are split (direct: 11 pages, indirect: negotiated segments); I/O beyond the
    /// ring's capacity waits inside the Device. While reconnecting, I/O is accepted and waits.
    Result<void> submit(const Io& io);
    /// Handles responses on every queue (call when any of pollable_fds() is readable, or at
    /// any time). Completions run inside. Never blocks.
    void poll();
    /// Event-channel fds of the connected queues (readable: responses). Changes on reconnect:
    /// re-read after each on_state_change().
    std::vector<int> pollable_fds() const;
    /// Polling mode (Options::spin): call before every sleep on pollable_fds(). While I/O is
    /// outstanding and responses arrived within the spin window, spins on every queue's
    /// rsp_prod (no syscall per probe) for up to that window; then does the ring's final check
    /// (arms rsp_event). True: responses (or a bad producer index) are there: call poll()
    /// instead of sleeping. False: sleeping is safe. Once a program has called it, poll() leaves
    /// the final check to it (so the backend need not notify responses taken while spinning):
    /// such a program must call it before each sleep. With spinning off it returns false at
    /// once and poll() keeps doing the final check.
    bool spin_for_responses();

    Phase phase() const noexcept;
    const DiskInfo& info() const noexcept;
    std::uint32_t devid() const noexcept;
    std::string frontend_dir() const;
    std::string backend_dir() const;
    /// Watch token used for this device's watches.
    std::string watch_token() const;
    /// I/Os submitted and not completed yet.
    std::size_t outstanding() const noexcept;
    /// Completed reconnects (backend restarts survived).
    unsigned reconnects() const noexcept;

    struct Impl;

private:
    explicit Device(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::blkfront

template <>
struct std::is_error_code_enum<hv::blkfront::Errc> : std::true_type {};
