// hv::SockBatch over liburing. Layer: common (hv::sock_batch). Thread: the owner's.
#include "hv/sock_batch.hpp"

#include <liburing.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "hv/log.hpp"

namespace hv {

struct SockBatch::Ring {
    io_uring ring{};
    bool initialised = false;
    ~Ring() {
        if (initialised) {
            io_uring_queue_exit(&ring);
        }
    }
};

SockBatch::SockBatch(std::unique_ptr<Ring> ring, unsigned entries) noexcept
    : ring_(std::move(ring)), entries_(entries) {
    ops_.resize(entries);
}
SockBatch::SockBatch(SockBatch&&) noexcept = default;
SockBatch& SockBatch::operator=(SockBatch&&) noexcept = default;
SockBatch::~SockBatch() = default;

Result<SockBatch> SockBatch::create(unsigned entries) {
    if (entries == 0) {
        return fail_errno(EINVAL);
    }
    auto ring = std::make_unique<Ring>();
    // SUBMIT_ALL: an operation that fails does not stop the ones queued after it.
    int r = io_uring_queue_init(entries, &ring->ring, IORING_SETUP_SUBMIT_ALL);
    if (r == -EINVAL) {
        r = io_uring_queue_init(entries, &ring->ring, 0);  // kernels before 5.18
    }
    if (r < 0) {
        return fail_errno(-r);
    }
    ring->initialised = true;
    return SockBatch(std::move(ring), entries);
}

bool SockBatch::recv(int fd, void* buf, std::size_t len, std::uint64_t cookie) noexcept {
    if (queued_ == entries_) {
        return false;
    }
    ops_[queued_++] = Op{fd, false, buf, len, cookie};
    return true;
}

bool SockBatch::send(int fd, const void* buf, std::size_t len, std::uint64_t cookie) noexcept {
    if (queued_ == entries_) {
        return false;
    }
    ops_[queued_++] = Op{fd, true, const_cast<void*>(buf), len, cookie};
    return true;
}

void SockBatch::run_plain(std::size_t n, std::vector<Completion>& out) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
        const Op& op = ops_[i];
        ssize_t r;
        do {
            r = op.is_send ? ::send(op.fd, op.buf, op.len, MSG_DONTWAIT | MSG_NOSIGNAL)
                           : ::recv(op.fd, op.buf, op.len, MSG_DONTWAIT);
        } while (r < 0 && errno == EINTR);
        out.push_back({op.cookie, r < 0 ? -static_cast<ssize_t>(errno) : r});
    }
}

void SockBatch::run(std::vector<Completion>& out) {
    out.clear();
    const std::size_t n = queued_;
    queued_ = 0;
    if (n < 2 || !ring_) {
        run_plain(n, out);
        return;
    }
    io_uring* ring = &ring_->ring;
    for (std::size_t i = 0; i < n; ++i) {
        const Op& op = ops_[i];
        io_uring_sqe* sqe = io_uring_get_sqe(ring);  // never null: n <= entries, ring drained
        if (op.is_send) {
            io_uring_prep_send(sqe, op.fd, op.buf, op.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            io_uring_prep_recv(sqe, op.fd, op.buf, op.len, MSG_DONTWAIT);
        }
        io_uring_sqe_set_data64(sqe, i);  // the index into ops_: results go back in queue order
    }
    int s;
    do {
        s = io_uring_submit_and_wait(ring, static_cast<unsigned>(n));
    } while (s == -EINTR);
    if (s < 0) {
        // io_uring_enter fails only when it consumed no SQE: none ran. Drop the ring (and the
        // SQEs in it) and do them here, and every later batch too.
        HV_LOG_RL(warn, "sock_batch: io_uring_enter: %s; plain syscalls from now on",
                  std::strerror(-s));
        ring_.reset();
        run_plain(n, out);
        return;
    }
    out.resize(n, Completion{0, -EIO});
    for (std::size_t i = 0; i < n; ++i) {
        out[i].cookie = ops_[i].cookie;
    }
    for (std::size_t seen = 0; seen < static_cast<std::size_t>(s);) {
        io_uring_cqe* cqe = nullptr;
        const int w = io_uring_wait_cqe(ring, &cqe);
        if (w == -EINTR) {
            continue;
        }
        if (w < 0) {
            // Cannot happen with MSG_DONTWAIT operations (they complete while submitted); the
            // unreported ones keep -EIO and their owners drop those connections.
            HV_LOG_RL(warn, "sock_batch: io_uring_wait_cqe: %s", std::strerror(-w));
            ring_.reset();
            return;
        }
        const auto i = static_cast<std::size_t>(io_uring_cqe_get_data64(cqe));
        if (i < n) {
            out[i].res = cqe->res;
        }
        io_uring_cqe_seen(ring, cqe);
        ++seen;
    }
}

}  // namespace hv
