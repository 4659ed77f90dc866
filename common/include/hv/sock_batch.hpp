// hv::SockBatch — non-blocking recv/send on many sockets in one io_uring_enter(2) instead of
// one syscall each: a server (or client) whose epoll pass found 64 ready connections reads all
// of them in one call and answers all of them in another. Layer: common (target hv::sock_batch,
// which links liburing; hv::common does not). Not thread-safe: one owner, or one lock.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "hv/expected.hpp"

namespace hv {

class SockBatch {
public:
    struct Completion {
        std::uint64_t cookie;  ///< as queued
        ssize_t res;           ///< bytes moved (0 on a recv: EOF), or -errno (-EAGAIN: nothing)
    };

    /// A batch of at most `entries` operations between run()s. Errors: io_uring_queue_init's
    /// (ENOSYS, EPERM where io_uring is disabled, ENOMEM): the caller falls back to plain
    /// syscalls.
    static Result<SockBatch> create(unsigned entries);
    SockBatch(SockBatch&&) noexcept;
    SockBatch& operator=(SockBatch&&) noexcept;
    ~SockBatch();

    /// Queues recv(fd, buf, len, MSG_DONTWAIT) / send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL).
    /// The buffer must stay valid and untouched until run() returns. False (nothing queued): the
    /// batch is full; run() it first.
    bool recv(int fd, void* buf, std::size_t len, std::uint64_t cookie) noexcept;
    bool send(int fd, const void* buf, std::size_t len, std::uint64_t cookie) noexcept;
    std::size_t queued() const noexcept { return queued_; }

    /// Performs every queued operation and puts their results in `out` (cleared first) in
    /// queue order; the batch is empty again. Operations on one fd happen in queue order.
    /// MSG_DONTWAIT: no operation waits for its socket, so this never sleeps. A batch of one is
    /// a plain syscall (no io_uring overhead). Never fails as a whole: if io_uring_enter fails
    /// the operations are done with plain syscalls, as every later batch is.
    void run(std::vector<Completion>& out);

private:
    struct Op {
        int fd;
        bool is_send;
        void* buf;
        std::size_t len;
        std::uint64_t cookie;
    };
    struct Ring;
    SockBatch(std::unique_ptr<Ring> ring, unsigned entries) noexcept;
    void run_plain(std::size_t n, std::vector<Completion>& out) noexcept;
    std::unique_ptr<Ring> ring_;
    std::vector<Op> ops_;
    std::size_t queued_ = 0;
    unsigned entries_ = 0;
};

}  // namespace hv
