// io_uring engine (liburing 2.3) over a file, a block device, or an LVM volume's PVs mapped
// segment by segment. O_DIRECT unless the filesystem refuses it. One request becomes one or
// more SQEs ("parts": stripe/segment splits, one per fixed-buffer piece, one fsync per device);
// it completes once, when its last part does, with the first error seen.
// Layer: L3. One instance per RingWorker: the owning thread only.
#include "blkback/engine_uring.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>

#include "blkback/engine_common.hpp"
#include "hv/assert.hpp"
#include "hv/log.hpp"

namespace hv::blk::detail {

hv::Result<void> check_layout(const UringLayout& l) noexcept {
    if (l.devices.empty() || l.segments.empty()) {
        return hv::fail(Errc::invalid_argument);
    }
    std::uint64_t pos = 0;
    for (const UringSegment& s : l.segments) {
        if (s.start_bytes != pos || s.size_bytes == 0 || s.areas.empty() ||
            s.size_bytes > std::numeric_limits<std::uint64_t>::max() - pos) {
            return hv::fail(Errc::invalid_argument);
        }
        for (const UringArea& a : s.areas) {
            if (a.device >= l.devices.size()) {
                return hv::fail(Errc::invalid_argument);
            }
        }
        const std::uint64_t n = s.areas.size();
        if (s.chunk_bytes == 0) {
            if (n != 1) {
                return hv::fail(Errc::invalid_argument);
            }
        } else if (s.chunk_bytes % 512 != 0 ||
                   s.chunk_bytes > std::numeric_limits<std::uint64_t>::max() / n ||
                   s.size_bytes % (s.chunk_bytes * n) != 0) {
            return hv::fail(Errc::invalid_argument);
        }
        pos += s.size_bytes;
    }
    if (pos != l.capacity_bytes) {
        return hv::fail(Errc::invalid_argument);
    }
    return {};
}

UringExtent map_layout(const UringLayout& l, std::uint64_t off) noexcept {
    auto it = std::upper_bound(
        l.segments.begin(), l.segments.end(), off,
        [](std::uint64_t o, const UringSegment& s) { return o < s.start_bytes; });
    HV_ASSERT(it != l.segments.begin() && off < l.capacity_bytes);
    const UringSegment& s = *(it - 1);
    const std::uint64_t rel = off - s.start_bytes;
    const std::uint64_t n = s.areas.size();
    if (s.chunk_bytes == 0 || n == 1) {
        return {s.areas[0].device, s.areas[0].base_bytes + rel, s.size_bytes - rel};
    }
    const std::uint64_t chunk = rel / s.chunk_bytes;
    const std::uint64_t in = rel % s.chunk_bytes;
    const UringArea& a = s.areas[chunk % n];
    return {a.device, a.base_bytes + (chunk / n) * s.chunk_bytes + in, s.chunk_bytes - in};
}

namespace {

/// Bytes of area `i` that hold logical segment bytes [0, x) (dm-stripe order).
std::uint64_t area_pos(const UringSegment& s, std::uint64_t x, std::uint64_t i) noexcept {
    const std::uint64_t n = s.areas.size();
    if (s.chunk_bytes == 0 || n == 1) {
        return x;
    }
    const std::uint64_t row = s.chunk_bytes * n;
    const std::uint64_t rem = x % row;
    const std::uint64_t lo = i * s.chunk_bytes;
    const std::uint64_t partial = rem <= lo ? 0 : std::min(rem - lo, s.chunk_bytes);
    return (x / row) * s.chunk_bytes + partial;
}

struct OpenedDevice {
    UniqueFd fd;
    std::uint64_t size_bytes = 0;
    std::uint32_t logical_block_size = 512;
    std::uint32_t physical_block_size = 512;
    bool discard = false;
};

std::uint64_t read_sysfs_u64(const char* path) noexcept {
    std::FILE* f = std::fopen(path, "re");
    if (f == nullptr) {
        return 0;
    }
    unsigned long long v = 0;
    if (std::fscanf(f, "%llu", &v) != 1) {
        v = 0;
    }
    std::fclose(f);
    return v;
}

/// Whether fallocate(PUNCH_HOLE) on this block device can succeed (it becomes a zero-out that
/// may unmap: Linux blkdev_fallocate with BLKDEV_ZERO_NOFALLBACK).
bool blockdev_can_punch(dev_t rdev) noexcept {
    char path[128];
    for (const char* dir : {"queue", "../queue"}) {
        std::snprintf(path, sizeof path, "/sys/dev/block/%u:%u/%s/write_zeroes_max_bytes",
                      major(rdev), minor(rdev), dir);
        if (read_sysfs_u64(path) != 0) {
            return true;
        }
    }
    return false;
}

hv::Result<OpenedDevice> open_device(const std::string& path, const UringEngineOptions& opt) noexcept {
    const int base = (opt.read_only == ReadOnly::yes ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    OpenedDevice d;
    d.fd.reset(::open(path.c_str(), base | O_DIRECT));
    if (!d.fd && errno == EINVAL && opt.allow_buffered_fallback) {
        HV_WARN("blkback: %s refuses O_DIRECT; using buffered I/O", path.c_str());
        d.fd.reset(::open(path.c_str(), base));
    }
    if (!d.fd) {
        const auto ec = hv::errno_code();
        HV_ERROR("blkback: open %s: %s", path.c_str(), ec.message().c_str());
        return hv::fail(ec);
    }
    struct stat st {};
    if (::fstat(d.fd.get(), &st) != 0) {
        return hv::fail_errno();
    }
    if (S_ISBLK(st.st_mode)) {
        std::uint64_t size = 0;
        int lbs = 0;
        unsigned pbs = 0;
        if (::ioctl(d.fd.get(), BLKGETSIZE64, &size) != 0 ||
            ::ioctl(d.fd.get(), BLKSSZGET, &lbs) != 0 ||
            ::ioctl(d.fd.get(), BLKPBSZGET, &pbs) != 0) {
            return hv::fail_errno();
        }
        d.size_bytes = size;
        d.logical_block_size = static_cast<std::uint32_t>(lbs);
        d.physical_block_size = std::max(pbs, d.logical_block_size);
        d.discard = blockdev_can_punch(st.st_rdev);
    } else if (S_ISREG(st.st_mode)) {
        d.size_bytes = static_cast<std::uint64_t>(st.st_size);
        d.logical_block_size = opt.file_block_size;
        d.physical_block_size = std::max<std::uint32_t>(opt.file_block_size,
                                                        static_cast<std::uint32_t>(st.st_blksize));
        d.discard = true;  // PUNCH_HOLE: every Linux filesystem we use for images has it
    } else {
        HV_ERROR("blkback: %s is neither a regular file nor a block device", path.c_str());
        return hv::fail(Errc::invalid_argument);
    }
    if (d.logical_block_size != 512 && d.logical_block_size != 4096) {
        HV_ERROR("blkback: %s: logical block size %u not supported", path.c_str(),
                 d.logical_block_size);
        return hv::fail(Errc::invalid_argument);
    }
    return d;
}

/// io_uring instance; io_uring_queue_exit on destruction. Not movable (liburing keeps the
/// struct's address in nothing, but the engine never needs to move it).
class Uring {
public:
    Uring() noexcept = default;
    Uring(const Uring&) = delete;
    Uring& operator=(const Uring&) = delete;
    ~Uring() {
        if (live_) {
            ::io_uring_queue_exit(&ring_);
        }
    }
    hv::Result<void> init(unsigned sq_entries, unsigned cq_entries) noexcept {
        io_uring_params p{};
        // SUBMIT_ALL (5.18): one bad SQE does not stop the rest of the batch.
        p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = cq_entries;
        int r = ::io_uring_queue_init_params(sq_entries, &ring_, &p);
        if (r == -EINVAL) {
            p = io_uring_params{};
            p.flags = IORING_SETUP_CQSIZE;
            p.cq_entries = cq_entries;
            r = ::io_uring_queue_init_params(sq_entries, &ring_, &p);
        }
        if (r < 0) {
            return hv::fail_errno(-r);
        }
        live_ = true;
        cq_entries_ = p.cq_entries;
        return {};
    }
    io_uring* get() noexcept { return &ring_; }
    const io_uring* get() const noexcept { return &ring_; }
    unsigned cq_entries() const noexcept { return cq_entries_; }

private:
    io_uring ring_{};
    bool live_ = false;
    unsigned cq_entries_ = 0;
};

class UringEngine final : public BlockEngine {
public:
    static hv::Result<std::unique_ptr<BlockEngine>> create(UringLayout layout,
                                                           std::vector<OpenedDevice> devs,
                                                           const UringEngineOptions& opt) noexcept;
    ~UringEngine() override { drain(); }

    const EngineProperties& properties() const noexcept override { return props_; }
    hv::Result<void> queue_readv(std::uint64_t off, std::span<const iovec> iov,
                                 std::uint64_t cookie) noexcept override {
        return queue_rw(Op::read, off, iov, cookie);
    }
    hv::Result<void> queue_writev(std::uint64_t off, std::span<const iovec> iov,
                                  std::uint64_t cookie) noexcept override {
        return queue_rw(Op::write, off, iov, cookie);
    }
    hv::Result<void> queue_readv_fixed(std::uint64_t off, std::span<const FixedIovec> iov,
                                       std::uint64_t cookie) noexcept override {
        return queue_rw(Op::read, off, iov, cookie);
    }
    hv::Result<void> queue_writev_fixed(std::uint64_t off, std::span<const FixedIovec> iov,
                                        std::uint64_t cookie) noexcept override {
        return queue_rw(Op::write, off, iov, cookie);
    }
    hv::Result<void> queue_flush(std::uint64_t cookie) noexcept override;
    hv::Result<void> queue_discard(std::uint64_t off, std::uint64_t len,
                                   std::uint64_t cookie) noexcept override;
    hv::Result<unsigned> submit() noexcept override;
    unsigned reap(std::span<IoCompletion> out) noexcept override;
    int notify_fd() const noexcept override { return event_.get(); }
    bool has_completions() const noexcept override {
        return ::io_uring_cq_ready(ring_.get()) > 0;
    }
    std::uint32_t in_flight() const noexcept override { return in_flight_; }
    hv::Result<void> register_buffers(std::span<const iovec> buffers) noexcept override;
    hv::Result<void> unregister_buffers() noexcept override;

private:
    enum class Op { read, write, flush, discard };
    struct Slot {
        std::uint64_t cookie = 0;
        std::uint64_t bytes = 0;
        std::int32_t error = 0;
        std::uint32_t parts_left = 0;
        std::uint32_t next_free = 0;
    };
    struct Part {
        std::uint32_t device;
        std::uint64_t device_offset;
        std::uint64_t len;
        std::uint32_t iov_start;  // plain: into the slot's iovec storage
        std::uint32_t iov_count;  // 0: fixed piece at addr/buf_index
        void* addr;
        std::uint32_t buf_index;
    };
    static constexpr std::uint32_t no_slot = std::numeric_limits<std::uint32_t>::max();

    UringEngine() noexcept = default;
    template <class Iov>
    hv::Result<void> queue_rw(Op op, std::uint64_t off, std::span<const Iov> iov,
                              std::uint64_t cookie) noexcept;
    hv::Result<void> add_part(std::uint32_t& n, const Part& p) noexcept;
    /// Checks room for n parts, takes a slot and fills the SQEs. Never fails after taking a slot.
    hv::Result<void> commit(Op op, std::uint32_t n, std::uint64_t cookie, std::uint32_t slot) noexcept;
    void drain() noexcept;

    // Members in dependency order; destroyed in reverse: the ring (which may still reference
    // the registered files and buffers) goes before the eventfd and the device fds.
    UringLayout layout_;
    std::vector<UniqueFd> fds_;
    UniqueFd event_;
    Uring ring_;
    EngineProperties props_;
    FixedBuffers fixed_;
    std::vector<Slot> slots_;
    std::vector<iovec> iov_pool_;  // slots × iov_per_slot_
    std::vector<Part> plan_;       // max_parts scratch for the request being queued
    std::uint32_t iov_per_slot_ = 0;
    std::uint32_t max_parts_ = 0;
    std::uint32_t free_head_ = no_slot;
    std::uint32_t in_flight_ = 0;        // requests queued and not reaped
    std::uint32_t parts_in_flight_ = 0;  // SQEs prepared and not completed
    bool kernel_buffers_ = false;        // buffers registered with the ring
};

hv::Result<std::unique_ptr<BlockEngine>> UringEngine::create(UringLayout layout,
                                                             std::vector<OpenedDevice> devs,
                                                             const UringEngineOptions& opt) noexcept {
    HV_TRY(check_layout(layout));
    if (opt.queue_depth == 0 || opt.queue_depth > 4096 || opt.max_segments == 0 ||
        opt.max_segments > 4096 || opt.max_parts == 0 || opt.max_parts > 4096) {
        return hv::fail(Errc::invalid_argument);
    }
    std::unique_ptr<UringEngine> e(new UringEngine());
    EngineProperties& p = e->props_;
    p.logical_block_size = 512;
    p.physical_block_size = 512;
    p.discard = true;
    for (const OpenedDevice& d : devs) {
        p.logical_block_size = std::max(p.logical_block_size, d.logical_block_size);
        p.physical_block_size = std::max(p.physical_block_size, d.physical_block_size);
        p.discard = p.discard && d.discard;
    }
    // Every area must lie inside its device (LVM metadata could claim otherwise).
    for (const UringSegment& s : layout.segments) {
        const std::uint64_t area_len = s.size_bytes / s.areas.size();
        for (const UringArea& a : s.areas) {
            const std::uint64_t dev_size = devs[a.device].size_bytes;
            if (a.base_bytes > dev_size || area_len > dev_size - a.base_bytes ||
                (a.base_bytes % p.logical_block_size) != 0) {
                HV_ERROR("blkback: segment at %" PRIu64 " lies outside %s", s.start_bytes,
                         layout.devices[a.device].c_str());
                return hv::fail(Errc::out_of_range);
            }
        }
        if (s.start_bytes % p.logical_block_size != 0 || s.chunk_bytes % p.logical_block_size != 0) {
            return hv::fail(Errc::misaligned);
        }
    }
    p.capacity_bytes = layout.capacity_bytes - layout.capacity_bytes % p.logical_block_size;
    if (p.capacity_bytes == 0) {
        return hv::fail(Errc::invalid_argument);
    }
    p.read_only = opt.read_only;
    p.discard = p.discard && opt.read_only == ReadOnly::no;
    p.discard_granularity = p.discard ? p.logical_block_size : 0;
    p.discard_zeroes = p.discard;
    p.queue_depth = opt.queue_depth;
    p.max_segments = opt.max_segments;

    e->layout_ = std::move(layout);
    for (OpenedDevice& d : devs) {
        e->fds_.push_back(std::move(d.fd));
    }
    e->event_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!e->event_) {
        return hv::fail_errno();
    }
    const unsigned sq = std::bit_ceil(std::max(opt.queue_depth, std::max(opt.max_parts,
        static_cast<std::uint32_t>(e->fds_.size()))));
    HV_TRY(e->ring_.init(sq, sq * 4));
    if (int r = ::io_uring_register_eventfd(e->ring_.get(), e->event_.get()); r < 0) {
        return hv::fail_errno(-r);
    }
    std::vector<int> raw;
    for (const UniqueFd& fd : e->fds_) {
        raw.push_back(fd.get());
    }
    if (int r = ::io_uring_register_files(e->ring_.get(), raw.data(),
                                          static_cast<unsigned>(raw.size()));
        r < 0) {
        return hv::fail_errno(-r);
    }
    e->max_parts_ = opt.max_parts;
    e->iov_per_slot_ = opt.max_segments + opt.max_parts;
    e->slots_.resize(opt.queue_depth);
    for (std::uint32_t i = 0; i < opt.queue_depth; ++i) {
        e->slots_[i].next_free = i + 1 < opt.queue_depth ? i + 1 : no_slot;
    }
    e->free_head_ = 0;
    e->iov_pool_.resize(static_cast<std::size_t>(opt.queue_depth) * e->iov_per_slot_);
    e->plan_.resize(opt.max_parts);
    return std::unique_ptr<BlockEngine>(std::move(e));
}

hv::Result<void> UringEngine::add_part(std::uint32_t& n, const Part& p) noexcept {
    if (n == max_parts_) {
        return hv::fail(Errc::too_many_parts);
    }
    plan_[n++] = p;
    return {};
}

template <class Iov>
hv::Result<void> UringEngine::queue_rw(Op op, std::uint64_t off, std::span<const Iov> iov,
                                       std::uint64_t cookie) noexcept {
    if (op == Op::write && props_.read_only == ReadOnly::yes) {
        return hv::fail(Errc::read_only);
    }
    auto total = iov_bytes(iov, props_.max_segments);
    if (!total) {
        return hv::unexpected(total.error());
    }
    if (*total == 0) {
        return hv::fail(Errc::invalid_argument);
    }
    if (*total > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
        return hv::fail(Errc::too_many_parts);  // the completion could not report the count
    }
    HV_TRY(check_range(props_, off, *total));
    if (free_head_ == no_slot) {
        return hv::fail(Errc::busy);
    }
    const std::uint32_t slot = free_head_;
    iovec* store = &iov_pool_[static_cast<std::size_t>(slot) * iov_per_slot_];
    std::uint32_t n = 0;
    std::uint64_t cur = off;
    if constexpr (std::is_same_v<Iov, FixedIovec>) {
        if (!kernel_buffers_) {
            return hv::fail(Errc::bad_buffer);
        }
        HV_TRY(fixed_.check(iov));
        for (const FixedIovec& v : iov) {
            std::uint64_t done = 0;
            while (done < v.len) {
                const UringExtent x = map_layout(layout_, cur);
                const std::uint64_t take = std::min<std::uint64_t>(x.len_bytes, v.len - done);
                HV_TRY(add_part(n, Part{x.device, x.device_offset, take, 0, 0,
                                        static_cast<std::byte*>(v.base) + done, v.buf_index}));
                done += take;
                cur += take;
            }
        }
    } else {
        std::size_t vi = 0;
        std::uint64_t vo = 0;
        std::uint32_t nv = 0;
        std::uint64_t remaining = *total;
        while (remaining > 0) {
            const UringExtent x = map_layout(layout_, cur);
            const std::uint64_t len = std::min(x.len_bytes, remaining);
            Part p{x.device, x.device_offset, len, nv, 0, nullptr, 0};
            std::uint64_t need = len;
            while (need > 0) {
                while (iov[vi].iov_len == vo) {  // skips empty iovecs; total guarantees an end
                    ++vi;
                    vo = 0;
                }
                const std::uint64_t take = std::min<std::uint64_t>(iov[vi].iov_len - vo, need);
                if (nv == iov_per_slot_) {
                    return hv::fail(Errc::too_many_parts);
                }
                store[nv++] = iovec{static_cast<std::byte*>(iov[vi].iov_base) + vo, take};
                ++p.iov_count;
                vo += take;
                need -= take;
            }
            HV_TRY(add_part(n, p));
            cur += len;
            remaining -= len;
        }
    }
    return commit(op, n, cookie, slot);
}

hv::Result<void> UringEngine::commit(Op op, std::uint32_t n, std::uint64_t cookie,
                                     std::uint32_t slot) noexcept {
    io_uring* ring = ring_.get();
    if (n > ::io_uring_sq_space_left(ring) || parts_in_flight_ + n > ring_.cq_entries()) {
        return hv::fail(Errc::busy);
    }
    HV_ASSERT(slot == free_head_);
    Slot& s = slots_[slot];
    free_head_ = s.next_free;
    s = Slot{cookie, 0, 0, n, no_slot};
    const iovec* store = &iov_pool_[static_cast<std::size_t>(slot) * iov_per_slot_];
    for (std::uint32_t i = 0; i < n; ++i) {
        const Part& p = plan_[i];
        io_uring_sqe* sqe = ::io_uring_get_sqe(ring);
        HV_ASSERT(sqe != nullptr);  // space checked above
        const auto doff = static_cast<__u64>(p.device_offset);
        std::uint64_t expect = 0;
        switch (op) {
        case Op::read:
        case Op::write:
            expect = p.len;
            if (p.iov_count == 0) {
                if (op == Op::read) {
                    ::io_uring_prep_read_fixed(sqe, static_cast<int>(p.device), p.addr,
                                               static_cast<unsigned>(p.len), doff,
                                               static_cast<int>(p.buf_index));
                } else {
                    ::io_uring_prep_write_fixed(sqe, static_cast<int>(p.device), p.addr,
                                                static_cast<unsigned>(p.len), doff,
                                                static_cast<int>(p.buf_index));
                }
            } else if (op == Op::read) {
                ::io_uring_prep_readv(sqe, static_cast<int>(p.device), store + p.iov_start,
                                      p.iov_count, doff);
            } else {
                ::io_uring_prep_writev(sqe, static_cast<int>(p.device), store + p.iov_start,
                                       p.iov_count, doff);
            }
            break;
        case Op::flush:
            ::io_uring_prep_fsync(sqe, static_cast<int>(p.device), IORING_FSYNC_DATASYNC);
            break;
        case Op::discard:
            ::io_uring_prep_fallocate(sqe, static_cast<int>(p.device),
                                      FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                      static_cast<off_t>(p.device_offset),
                                      static_cast<off_t>(p.len));
            break;
        }
        sqe->flags |= IOSQE_FIXED_FILE;
        // user_data: slot in the high half, the exact result this part must return in the low.
        ::io_uring_sqe_set_data64(sqe, (static_cast<std::uint64_t>(slot) << 32) | expect);
    }
    parts_in_flight_ += n;
    ++in_flight_;
    return {};
}

hv::Result<void> UringEngine::queue_flush(std::uint64_t cookie) noexcept {
    if (free_head_ == no_slot) {
        return hv::fail(Errc::busy);
    }
    std::uint32_t n = 0;
    for (std::uint32_t d = 0; d < fds_.size(); ++d) {
        HV_TRY(add_part(n, Part{d, 0, 0, 0, 0, nullptr, 0}));
    }
    return commit(Op::flush, n, cookie, free_head_);
}

hv::Result<void> UringEngine::queue_discard(std::uint64_t off, std::uint64_t len,
                                            std::uint64_t cookie) noexcept {
    if (props_.read_only == ReadOnly::yes) {
        return hv::fail(Errc::read_only);
    }
    if (!props_.discard) {
        return hv::fail(Errc::unsupported_op);
    }
    if (len == 0) {
        return hv::fail(Errc::invalid_argument);
    }
    HV_TRY(check_range(props_, off, len));
    if (free_head_ == no_slot) {
        return hv::fail(Errc::busy);
    }
    const std::uint64_t end = off + len;
    std::uint32_t n = 0;
    // Within a striped segment each area's share of a logical range is contiguous on its PV,
    // so one fallocate per area and segment suffices.
    for (const UringSegment& s : layout_.segments) {
        const std::uint64_t s_end = s.start_bytes + s.size_bytes;
        if (s_end <= off || s.start_bytes >= end) {
            continue;
        }
        const std::uint64_t lo = std::max(off, s.start_bytes) - s.start_bytes;
        const std::uint64_t hi = std::min(end, s_end) - s.start_bytes;
        for (std::uint32_t i = 0; i < s.areas.size(); ++i) {
            const std::uint64_t a_lo = area_pos(s, lo, i);
            const std::uint64_t a_hi = area_pos(s, hi, i);
            if (a_hi > a_lo) {
                HV_TRY(add_part(n, Part{s.areas[i].device, s.areas[i].base_bytes + a_lo,
                                        a_hi - a_lo, 0, 0, nullptr, 0}));
            }
        }
    }
    return commit(Op::discard, n, cookie, free_head_);
}

hv::Result<unsigned> UringEngine::submit() noexcept {
    io_uring* ring = ring_.get();
    if (::io_uring_sq_ready(ring) == 0) {
        return 0U;
    }
    const int r = ::io_uring_submit(ring);
    if (r == -EAGAIN || r == -EBUSY) {
        return hv::fail(Errc::busy);  // SQEs stay queued; the next submit() retries them
    }
    if (r < 0) {
        return hv::fail_errno(-r);
    }
    return static_cast<unsigned>(r);
}

unsigned UringEngine::reap(std::span<IoCompletion> out) noexcept {
    std::uint64_t count = 0;
    (void)!::read(event_.get(), &count, sizeof count);  // clear first: later CQEs re-signal
    io_uring* ring = ring_.get();
    unsigned n = 0;
    io_uring_cqe* cqe = nullptr;
    while (n < out.size() && ::io_uring_peek_cqe(ring, &cqe) == 0) {
        const std::uint64_t ud = cqe->user_data;
        const std::int32_t res = cqe->res;
        ::io_uring_cqe_seen(ring, cqe);
        HV_ASSERT(parts_in_flight_ > 0);
        --parts_in_flight_;
        const auto slot = static_cast<std::uint32_t>(ud >> 32);
        const auto expect = static_cast<std::int64_t>(ud & 0xffffffffU);
        HV_ASSERT(slot < slots_.size() && slots_[slot].parts_left > 0);
        Slot& s = slots_[slot];
        if (res < 0) {
            s.error = s.error != 0 ? s.error : res;  // first error wins
        } else if (res != expect) {
            s.error = s.error != 0 ? s.error : -EIO;  // short transfer
        } else {
            s.bytes += static_cast<std::uint64_t>(res);
        }
        if (--s.parts_left == 0) {
            out[n++] = IoCompletion{s.cookie, s.error != 0 ? s.error
                                                           : static_cast<std::int32_t>(s.bytes)};
            s.next_free = free_head_;
            free_head_ = slot;
            --in_flight_;
        }
    }
    if (::io_uring_cq_ready(ring) > 0) {
        const std::uint64_t one = 1;  // keep notify_fd() readable for what is left
        (void)!::write(event_.get(), &one, sizeof one);
    }
    return n;
}

hv::Result<void> UringEngine::register_buffers(std::span<const iovec> buffers) noexcept {
    if (in_flight_ != 0) {
        return hv::fail(Errc::in_use);
    }
    HV_TRY(unregister_buffers());
    HV_TRY(fixed_.set(buffers));
    const int r = ::io_uring_register_buffers(ring_.get(), buffers.data(),
                                              static_cast<unsigned>(buffers.size()));
    if (r < 0) {
        fixed_.clear();
        return hv::fail_errno(-r);
    }
    kernel_buffers_ = true;
    return {};
}

hv::Result<void> UringEngine::unregister_buffers() noexcept {
    if (in_flight_ != 0) {
        return hv::fail(Errc::in_use);
    }
    if (kernel_buffers_) {
        const int r = ::io_uring_unregister_buffers(ring_.get());
        if (r < 0) {
            return hv::fail_errno(-r);
        }
        kernel_buffers_ = false;
    }
    fixed_.clear();
    return {};
}

void UringEngine::drain() noexcept {
    // I/O in flight may target guest pages that die after us: wait for every part the kernel
    // has. Parts still in the SQ after a last submit attempt never reach it (the ring is torn
    // down next), so they are not waited for.
    io_uring* ring = ring_.get();
    if (parts_in_flight_ > 0 && ::io_uring_sq_ready(ring) > 0) {
        (void)::io_uring_submit(ring);
        const unsigned stuck = ::io_uring_sq_ready(ring);
        parts_in_flight_ -= std::min(stuck, parts_in_flight_);
    }
    while (parts_in_flight_ > 0) {
        io_uring_cqe* cqe = nullptr;
        const int r = ::io_uring_wait_cqe(ring, &cqe);
        if (r == -EINTR) {
            continue;
        }
        if (r < 0) {
            HV_ERROR("blkback: draining io_uring: %s", std::strerror(-r));
            return;
        }
        ::io_uring_cqe_seen(ring, cqe);
        --parts_in_flight_;
    }
}

}  // namespace

hv::Result<std::unique_ptr<BlockEngine>> make_uring_layout_engine(
    UringLayout layout, const UringEngineOptions& opt) noexcept {
    std::vector<OpenedDevice> devs;
    for (const std::string& path : layout.devices) {
        auto d = open_device(path, opt);
        if (!d) {
            return hv::unexpected(d.error());
        }
        devs.push_back(std::move(*d));
    }
    return UringEngine::create(std::move(layout), std::move(devs), opt);
}

}  // namespace hv::blk::detail

namespace hv::blk {

hv::Result<std::unique_ptr<BlockEngine>> make_uring_engine(const std::string& path,
                                                           const UringEngineOptions& opt) noexcept {
    auto d = detail::open_device(path, opt);
    if (!d) {
        return hv::unexpected(d.error());
    }
    detail::UringLayout layout;
    layout.devices.push_back(path);
    const std::uint64_t cap = d->size_bytes - d->size_bytes % d->logical_block_size;
    if (cap == 0) {
        HV_ERROR("blkback: %s is empty", path.c_str());
        return hv::fail(Errc::invalid_argument);
    }
    layout.segments.push_back(detail::UringSegment{0, cap, 0, {detail::UringArea{0, 0}}});
    layout.capacity_bytes = cap;
    std::vector<detail::OpenedDevice> devs;
    devs.push_back(std::move(*d));
    return detail::UringEngine::create(std::move(layout), std::move(devs), opt);
}

}  // namespace hv::blk
