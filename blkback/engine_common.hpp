// Private helpers shared by the engines: argument checks, fixed-buffer bookkeeping, and the
// immediate-completion base of the null and memory engines. Layer: L3. Engine-owner thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "blkback/engine.hpp"
#include "hv/unique_fd.hpp"

namespace hv::blk::detail {

inline constexpr std::uint32_t max_fixed_buffers = 1024;

/// Sum of iovec lengths; Errc::out_of_range on overflow, Errc::too_many_parts above `max_segments`.
hv::Result<std::uint64_t> iov_bytes(std::span<const iovec> iov, std::uint32_t max_segments) noexcept;
hv::Result<std::uint64_t> iov_bytes(std::span<const FixedIovec> iov,
                                    std::uint32_t max_segments) noexcept;
/// Offset/length against the device: alignment, overflow, capacity.
hv::Result<void> check_range(const EngineProperties& p, std::uint64_t offset_bytes,
                             std::uint64_t len_bytes) noexcept;

/// The registered fixed buffers of one engine, for validating FixedIovecs.
class FixedBuffers {
public:
    hv::Result<void> set(std::span<const iovec> buffers) noexcept;
    void clear() noexcept { bufs_.clear(); }
    std::size_t count() const noexcept { return bufs_.size(); }
    /// Errc::bad_buffer unless every piece lies inside its registered buffer.
    hv::Result<void> check(std::span<const FixedIovec> iov) const noexcept;

private:
    std::vector<iovec> bufs_;
};

/// Base of engines that do their work inside queue_*() and complete at the next submit():
/// completions sit in a preallocated ring (queued → submitted → reaped), an eventfd signals.
class ImmediateEngine : public BlockEngine {
public:
    hv::Result<void> queue_readv(std::uint64_t offset_bytes, std::span<const iovec> iov,
                                 std::uint64_t cookie) noexcept final;
    hv::Result<void> queue_writev(std::uint64_t offset_bytes, std::span<const iovec> iov,
                                  std::uint64_t cookie) noexcept final;
    hv::Result<void> queue_readv_fixed(std::uint64_t offset_bytes, std::span<const FixedIovec> iov,
                                       std::uint64_t cookie) noexcept final;
    hv::Result<void> queue_writev_fixed(std::uint64_t offset_bytes, std::span<const FixedIovec> iov,
                                        std::uint64_t cookie) noexcept final;
    hv::Result<void> queue_flush(std::uint64_t cookie) noexcept final;
    hv::Result<void> queue_discard(std::uint64_t offset_bytes, std::uint64_t len_bytes,
                                   std::uint64_t cookie) noexcept final;
    hv::Result<unsigned> submit() noexcept final;
    unsigned reap(std::span<IoCompletion> out) noexcept final;
    int notify_fd() const noexcept final { return event_.get(); }
    bool has_completions() const noexcept final { return ready_ > 0; }
    std::uint32_t in_flight() const noexcept final { return ready_ + pending_; }
    hv::Result<void> register_buffers(std::span<const iovec> buffers) noexcept final;
    hv::Result<void> unregister_buffers() noexcept final;
    const EngineProperties& properties() const noexcept final { return props_; }

protected:
    ImmediateEngine(EngineProperties props, UniqueFd event) noexcept;
    /// Data movement of the concrete engine; the range is already checked.
    virtual void do_read(std::uint64_t offset_bytes, std::span<const iovec> iov) noexcept = 0;
    virtual void do_write(std::uint64_t offset_bytes, std::span<const iovec> iov) noexcept = 0;
    virtual void do_discard(std::uint64_t offset_bytes, std::uint64_t len_bytes) noexcept = 0;

private:
    hv::Result<void> admit() const noexcept;
    void post(std::uint64_t cookie, std::int32_t result) noexcept;
    template <class Iov>
    hv::Result<void> rw(bool write, std::uint64_t offset_bytes, std::span<const Iov> iov,
                        std::uint64_t cookie) noexcept;

    EngineProperties props_;
    UniqueFd event_;
    FixedBuffers fixed_;
    std::vector<IoCompletion> ring_;  // [head_, head_+ready_) reapable, then pending_ queued
    std::vector<iovec> scratch_;      // fixed iovecs seen as plain ones
    std::uint32_t head_ = 0;
    std::uint32_t ready_ = 0;
    std::uint32_t pending_ = 0;
};

/// A non-blocking eventfd for notify_fd().
hv::Result<UniqueFd> make_event_fd() noexcept;

/// Properties of a null/memory engine from its options; Errc::invalid_argument if malformed.
hv::Result<EngineProperties> immediate_properties(std::uint64_t capacity_bytes,
                                                  const MemoryEngineOptions& opt) noexcept;

}  // namespace hv::blk::detail
