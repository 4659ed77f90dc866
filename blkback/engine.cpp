// Errc's category and the helpers shared by every engine. Layer: L3. Any thread (stateless
// helpers); ImmediateEngine instances belong to one thread.
#include <sys/eventfd.h>

#include <cstring>
#include <limits>
#include <string>

#include "blkback/engine_common.hpp"

namespace hv::blk {

namespace {
class BlkCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "blkback"; }
    std::string message(int c) const override {
        switch (static_cast<Errc>(c)) {
        case Errc::busy: return "engine busy (retry after completions)";
        case Errc::unsupported_op: return "operation not supported";
        case Errc::out_of_range: return "range outside the device";
        case Errc::misaligned: return "offset or length not aligned to the logical block size";
        case Errc::read_only: return "device is read-only";
        case Errc::bad_buffer: return "bad fixed buffer index or range";
        case Errc::too_many_parts: return "request needs too many iovecs or sub-I/Os";
        case Errc::bad_segment_count: return "bad number of segments";
        case Errc::bad_segment: return "bad segment sector range";
        case Errc::bad_indirect: return "bad indirect request";
        case Errc::in_use: return "requests in flight";
        case Errc::lvm_command: return "LVM command failed";
        case Errc::lvm_report: return "unparsable LVM report";
        case Errc::lvm_not_found: return "logical volume or physical volume not found";
        case Errc::lvm_unsupported: return "unsupported LVM segment type";
        case Errc::invalid_argument: return "invalid argument";
        }
        return "blkback error " + std::to_string(c);
    }
};
}  // namespace

const std::error_category& blk_category() noexcept {
    static const BlkCategory cat;
    return cat;
}

}  // namespace hv::blk

namespace hv::blk::detail {

hv::Result<std::uint64_t> iov_bytes(std::span<const iovec> iov,
                                    std::uint32_t max_segments) noexcept {
    if (iov.size() > max_segments) {
        return hv::fail(Errc::too_many_parts);
    }
    std::uint64_t total = 0;
    for (const iovec& v : iov) {
        if (v.iov_len > std::numeric_limits<std::uint64_t>::max() - total) {
            return hv::fail(Errc::out_of_range);
        }
        total += v.iov_len;
    }
    return total;
}

hv::Result<std::uint64_t> iov_bytes(std::span<const FixedIovec> iov,
                                    std::uint32_t max_segments) noexcept {
    if (iov.size() > max_segments) {
        return hv::fail(Errc::too_many_parts);
    }
    std::uint64_t total = 0;
    for (const FixedIovec& v : iov) {
        total += v.len;  // at most max_segments * 2^32: no overflow
    }
    return total;
}

hv::Result<void> check_range(const EngineProperties& p, std::uint64_t offset_bytes,
                             std::uint64_t len_bytes) noexcept {
    const std::uint64_t mask = p.logical_block_size - 1U;
    if (((offset_bytes | len_bytes) & mask) != 0) {
        return hv::fail(Errc::misaligned);
    }
    if (offset_bytes > p.capacity_bytes || len_bytes > p.capacity_bytes - offset_bytes) {
        return hv::fail(Errc::out_of_range);
    }
    return {};
}

hv::Result<void> FixedBuffers::set(std::span<const iovec> buffers) noexcept {
    if (buffers.empty() || buffers.size() > max_fixed_buffers) {
        return hv::fail(Errc::invalid_argument);
    }
    for (const iovec& b : buffers) {
        const auto base = reinterpret_cast<std::uintptr_t>(b.iov_base);
        if (b.iov_base == nullptr || b.iov_len == 0 ||
            b.iov_len > std::numeric_limits<std::uintptr_t>::max() - base) {
            return hv::fail(Errc::invalid_argument);
        }
    }
    bufs_.assign(buffers.begin(), buffers.end());
    return {};
}

hv::Result<void> FixedBuffers::check(std::span<const FixedIovec> iov) const noexcept {
    for (const FixedIovec& v : iov) {
        if (v.buf_index >= bufs_.size()) {
            return hv::fail(Errc::bad_buffer);
        }
        const iovec& b = bufs_[v.buf_index];
        const auto lo = reinterpret_cast<std::uintptr_t>(b.iov_base);
        const auto p = reinterpret_cast<std::uintptr_t>(v.base);
        if (p < lo || p - lo > b.iov_len || v.len > b.iov_len - (p - lo)) {
            return hv::fail(Errc::bad_buffer);
        }
    }
    return {};
}

ImmediateEngine::ImmediateEngine(EngineProperties props, UniqueFd event) noexcept
    : props_(props), event_(std::move(event)), ring_(props.queue_depth),
      scratch_(props.max_segments) {}

hv::Result<UniqueFd> make_event_fd() noexcept {
    UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!fd) {
        return hv::fail_errno();
    }
    return fd;
}

hv::Result<void> ImmediateEngine::admit() const noexcept {
    if (ready_ + pending_ >= props_.queue_depth) {
        return hv::fail(Errc::busy);
    }
    return {};
}

void ImmediateEngine::post(std::uint64_t cookie, std::int32_t result) noexcept {
    const std::uint32_t slot = (head_ + ready_ + pending_) % props_.queue_depth;
    ring_[slot] = IoCompletion{cookie, result};
    ++pending_;
}

template <class Iov>
hv::Result<void> ImmediateEngine::rw(bool write, std::uint64_t offset_bytes,
                                     std::span<const Iov> iov, std::uint64_t cookie) noexcept {
    if (write && props_.read_only == ReadOnly::yes) {
        return hv::fail(Errc::read_only);
    }
    auto len = iov_bytes(iov, props_.max_segments);
    if (!len) {
        return hv::unexpected(len.error());
    }
    if (*len > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
        return hv::fail(Errc::too_many_parts);  // the completion could not report the count
    }
    if (*len == 0) {
        return hv::fail(Errc::invalid_argument);
    }
    HV_TRY(check_range(props_, offset_bytes, *len));
    std::span<const iovec> plain;
    if constexpr (std::is_same_v<Iov, FixedIovec>) {
        HV_TRY(fixed_.check(iov));
        for (std::size_t i = 0; i < iov.size(); ++i) {
            scratch_[i] = iovec{iov[i].base, iov[i].len};
        }
        plain = std::span<const iovec>(scratch_.data(), iov.size());
    } else {
        plain = iov;
    }
    HV_TRY(admit());
    if (write) {
        do_write(offset_bytes, plain);
    } else {
        do_read(offset_bytes, plain);
    }
    post(cookie, static_cast<std::int32_t>(*len));
    return {};
}

hv::Result<void> ImmediateEngine::queue_readv(std::uint64_t offset_bytes,
                                              std::span<const iovec> iov,
                                              std::uint64_t cookie) noexcept {
    return rw(false, offset_bytes, iov, cookie);
}
hv::Result<void> ImmediateEngine::queue_writev(std::uint64_t offset_bytes,
                                               std::span<const iovec> iov,
                                               std::uint64_t cookie) noexcept {
    return rw(true, offset_bytes, iov, cookie);
}
hv::Result<void> ImmediateEngine::queue_readv_fixed(std::uint64_t offset_bytes,
                                                    std::span<const FixedIovec> iov,
                                                    std::uint64_t cookie) noexcept {
    return rw(false, offset_bytes, iov, cookie);
}
hv::Result<void> ImmediateEngine::queue_writev_fixed(std::uint64_t offset_bytes,
                                                     std::span<const FixedIovec> iov,
                                                     std::uint64_t cookie) noexcept {
    return rw(true, offset_bytes, iov, cookie);
}

hv::Result<void> ImmediateEngine::queue_flush(std::uint64_t cookie) noexcept {
    HV_TRY(admit());
    post(cookie, 0);
    return {};
}

hv::Result<void> ImmediateEngine::queue_discard(std::uint64_t offset_bytes,
                                                std::uint64_t len_bytes,
                                                std::uint64_t cookie) noexcept {
    if (props_.read_only == ReadOnly::yes) {
        return hv::fail(Errc::read_only);
    }
    if (!props_.discard) {
        return hv::fail(Errc::unsupported_op);
    }
    if (len_bytes == 0) {
        return hv::fail(Errc::invalid_argument);
    }
    HV_TRY(check_range(props_, offset_bytes, len_bytes));
    HV_TRY(admit());
    do_discard(offset_bytes, len_bytes);
    post(cookie, 0);
    return {};
}

hv::Result<unsigned> ImmediateEngine::submit() noexcept {
    const unsigned n = pending_;
    if (n == 0) {
        return 0U;
    }
    ready_ += pending_;
    pending_ = 0;
    const std::uint64_t one = 1;
    if (::write(event_.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
        return hv::fail_errno();
    }
    return n;
}

unsigned ImmediateEngine::reap(std::span<IoCompletion> out) noexcept {
    std::uint64_t drained = 0;
    (void)!::read(event_.get(), &drained, sizeof drained);  // EAGAIN when already clear
    unsigned n = 0;
    while (n < out.size() && ready_ > 0) {
        out[n++] = ring_[head_];
        head_ = (head_ + 1) % props_.queue_depth;
        --ready_;
    }
    if (ready_ > 0) {
        const std::uint64_t one = 1;  // keep notify_fd() readable for the rest
        (void)!::write(event_.get(), &one, sizeof one);
    }
    return n;
}

hv::Result<void> ImmediateEngine::register_buffers(std::span<const iovec> buffers) noexcept {
    if (in_flight() != 0) {
        return hv::fail(Errc::in_use);
    }
    return fixed_.set(buffers);
}

hv::Result<void> ImmediateEngine::unregister_buffers() noexcept {
    if (in_flight() != 0) {
        return hv::fail(Errc::in_use);
    }
    fixed_.clear();
    return {};
}

}  // namespace hv::blk::detail
