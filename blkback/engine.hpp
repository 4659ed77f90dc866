// The L2 → L3 seam (style.md §12): BlockEngine turns byte offsets, iovecs and 64-bit cookies into
// storage I/O. Layer: L3 engines. One instance per RingWorker; never shared between threads.
// No liburing, LVM or ring types appear here.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>

#include "hv/expected.hpp"

namespace hv::blk {

/// blkback's error codes (one enum for the layer: storage engines, LVM and request parsing).
/// OS errors travel as std::system_category() codes instead.
enum class Errc : int {
    busy = 1,          ///< backpressure: engine full, retry after reap(); not a failure
    unsupported_op,    ///< operation not supported (wire: BLKIF_RSP_EOPNOTSUPP)
    out_of_range,      ///< past the end of the device, or offset arithmetic overflow
    misaligned,        ///< offset or length not a multiple of the logical block size
    read_only,         ///< write, discard or flush on a read-only device
    bad_buffer,        ///< fixed-buffer index unknown or range outside its registered buffer
    too_many_parts,    ///< one request would need more iovecs or sub-I/Os than the engine holds
    bad_segment_count, ///< nr_segments 0 (where data is needed) or above the limit
    bad_segment,       ///< first_sect > last_sect or last_sect > 7
    bad_indirect,      ///< indirect_op not READ/WRITE, or indirect page count mismatch
    in_use,            ///< buffers cannot change while I/O is in flight
    lvm_command,       ///< an LVM command failed (see the log)
    lvm_report,        ///< LVM's report could not be parsed or is inconsistent
    lvm_not_found,     ///< no such VG/LV, or a PV of it was not among the scanned devices
    lvm_unsupported,   ///< a segment type other than linear or striped
    invalid_argument,  ///< a caller (not guest) passed a malformed name or option
};

const std::error_category& blk_category() noexcept;
inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), blk_category()};
}

}  // namespace hv::blk

template <>
struct std::is_error_code_enum<hv::blk::Errc> : std::true_type {};

namespace hv::blk {

enum class ReadOnly : bool { no, yes };

/// One finished request. `result` is the number of bytes transferred (0 for flush and
/// discard), or -errno. Exactly one per successfully queued request.
struct IoCompletion {
    std::uint64_t cookie;  ///< chosen by the caller (the worker's request-slot index)
    std::int32_t result;
};

/// A piece of a registered fixed buffer: [base, base + len) must lie inside buffer `buf_index`.
struct FixedIovec {
    void* base;
    std::uint32_t len;
    std::uint32_t buf_index;
};

/// What the device looks like. Fixed for the engine's lifetime.
struct EngineProperties {
    std::uint64_t capacity_bytes = 0;       ///< multiple of logical_block_size
    std::uint32_t logical_block_size = 512; ///< 512 or 4096: offsets/lengths must be multiples
    std::uint32_t physical_block_size = 512;
    ReadOnly read_only = ReadOnly::no;
    bool discard = false;                   ///< queue_discard() may succeed
    std::uint32_t discard_granularity = 0;  ///< bytes; 0 when !discard
    bool discard_zeroes = false;            ///< discarded ranges read back as zeroes
    std::uint32_t queue_depth = 0;          ///< max requests in flight (queued, not yet reaped)
    std::uint32_t max_segments = 0;         ///< max iovecs per request
};

/// Asynchronous block I/O (SP bdev contract). Every queue_* call:
///  - failure: nothing was queued and no completion will come for `cookie`;
///  - success: reap() reports exactly one IoCompletion carrying `cookie`.
/// Errc::busy is backpressure, not failure: stop queueing, submit(), reap, then retry.
/// Offsets and lengths are bytes; they must be multiples of logical_block_size and inside
/// capacity_bytes (Errc::misaligned / Errc::out_of_range otherwise). Buffers named by an
/// iovec must stay valid until the request's completion is reaped. Queued requests are not
/// ordered with respect to each other: the caller drains before a barrier (LX blkback).
/// Destroying an engine waits for the I/O in flight (its buffers may be guest pages).
class BlockEngine {
public:
    virtual ~BlockEngine() = default;
    BlockEngine() = default;
    BlockEngine(const BlockEngine&) = delete;
    BlockEngine& operator=(const BlockEngine&) = delete;

    virtual const EngineProperties& properties() const noexcept = 0;

    virtual hv::Result<void> queue_readv(std::uint64_t offset_bytes, std::span<const iovec> iov,
                                         std::uint64_t cookie) noexcept = 0;
    virtual hv::Result<void> queue_writev(std::uint64_t offset_bytes, std::span<const iovec> iov,
                                          std::uint64_t cookie) noexcept = 0;
    /// Same, over registered fixed buffers (io_uring: no per-I/O page pinning).
    virtual hv::Result<void> queue_readv_fixed(std::uint64_t offset_bytes,
                                               std::span<const FixedIovec> iov,
                                               std::uint64_t cookie) noexcept = 0;
    virtual hv::Result<void> queue_writev_fixed(std::uint64_t offset_bytes,
                                                std::span<const FixedIovec> iov,
                                                std::uint64_t cookie) noexcept = 0;
    /// Makes every write completed before this call durable. Completion result 0.
    virtual hv::Result<void> queue_flush(std::uint64_t cookie) noexcept = 0;
    /// Deallocates [offset, offset+len); afterwards the range reads as zeroes when
    /// properties().discard_zeroes. Errc::unsupported_op when !properties().discard.
    virtual hv::Result<void> queue_discard(std::uint64_t offset_bytes, std::uint64_t len_bytes,
                                           std::uint64_t cookie) noexcept = 0;

    /// Hands everything queued since the last submit() to the storage (one syscall per batch).
    /// Returns how many sub-I/Os were submitted. Requests queued but not yet submitted never
    /// complete until submit() is called.
    virtual hv::Result<unsigned> submit() noexcept = 0;
    /// Moves finished requests into `out`; never blocks. Returns how many were written. If the
    /// result equals out.size() more may be waiting: call again (notify_fd() stays readable).
    virtual unsigned reap(std::span<IoCompletion> out) noexcept = 0;
    /// Readable (poll/epoll) when reap() has work. Owned by the engine.
    virtual int notify_fd() const noexcept = 0;
    /// True when reap() would return something: a check without a syscall (io_uring: the CQ
    /// tail, as `io_uring_peek_cqe`), for a worker that spins before sleeping on notify_fd().
    virtual bool has_completions() const noexcept = 0;
    /// Requests queued and not yet reaped.
    virtual std::uint32_t in_flight() const noexcept = 0;

    /// Registers memory (e.g. the frontend's mapped extent) for the *_fixed calls; replaces a
    /// previous registration. Errc::in_use while requests are in flight. At most 1024 buffers,
    /// each at most 1 GiB (io_uring's limit: split a larger extent). The memory is pinned
    /// (io_uring) until unregistered or the engine dies, and must stay mapped that long.
    virtual hv::Result<void> register_buffers(std::span<const iovec> buffers) noexcept = 0;
    virtual hv::Result<void> unregister_buffers() noexcept = 0;
};

struct MemoryEngineOptions {
    std::uint32_t logical_block_size = 512;
    std::uint32_t queue_depth = 128;
    std::uint32_t max_segments = 256;
    ReadOnly read_only = ReadOnly::no;
};
/// Completes at submit() without touching data (reads leave buffers alone): ring + hv-min
/// overhead apart from storage. Capacity is nominal.
hv::Result<std::unique_ptr<BlockEngine>> make_null_engine(
    std::uint64_t capacity_bytes, const MemoryEngineOptions& opt = {}) noexcept;
/// RAM-backed store (anonymous mapping, zero-filled); completes at submit(). Tests, benches.
hv::Result<std::unique_ptr<BlockEngine>> make_memory_engine(
    std::uint64_t capacity_bytes, const MemoryEngineOptions& opt = {}) noexcept;

struct UringEngineOptions {
    ReadOnly read_only = ReadOnly::no;
    std::uint32_t queue_depth = 128;    ///< requests in flight
    std::uint32_t max_segments = 256;   ///< iovecs per request
    std::uint32_t max_parts = 64;       ///< sub-I/Os per request after segment/stripe splitting
    /// Logical block size for regular files (block devices report theirs). 512 or 4096.
    std::uint32_t file_block_size = 512;
    /// Use buffered I/O when the filesystem refuses O_DIRECT (logged). Off: that is an error.
    bool allow_buffered_fallback = true;
};
/// io_uring over a regular file (sparse image) or a block device, opened O_DIRECT.
hv::Result<std::unique_ptr<BlockEngine>> make_uring_engine(const std::string& path,
                                                           const UringEngineOptions& opt = {}) noexcept;

}  // namespace hv::blk
