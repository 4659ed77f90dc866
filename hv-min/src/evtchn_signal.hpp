// The pending state of an event-channel port: a Unix datagram socket that the port's owner
// receives on, and sockets connected to it that send. Layer: hv-min (L1), shared by the core
// (which makes them) and libhv (which sends and drains). Any thread; no state of its own.
//
// Why not an eventfd (the first primitive): an eventfd is one open file description shared by
// every holder, so any domain holding it can clear O_NONBLOCK and saturate the counter, and the
// next write by hv-min's loop or by the peer domain blocks. Why not a pipe: the reader and the
// writers share the pipe's mutex, and splice(2) holds it while it waits on another file (a pipe
// end spliced into a full socket), so a domain could make writes with RWF_NOWAIT block anyway
// (checked on 6.18). A datagram socket per port has none of this: each sender is a socket of
// its own (flags, shutdown, connect and buffers of one sender touch no other), a send with
// MSG_DONTWAIT never sleeps whatever any file's flags say, and the receiver's queue is bounded
// by net.unix.max_dgram_qlen (a full queue is EAGAIN: the port is pending already).
#pragma once

#include <sys/socket.h>

#include <cerrno>

namespace hv::hvmin::evtchn_signal {

/// Sets the port behind `send_fd` pending: one datagram, never blocks, never raises SIGPIPE.
/// Returns 0, or an errno: EAGAIN is returned as 0 (the receiver's queue is full, so the port is
/// pending already: sends coalesce), and so are the errors of a receiver that is gone or a
/// sender that was shut down or disconnected by whoever holds it (the event is dropped, as Xen
/// drops sends on a port that is not bound).
inline int send(int send_fd) noexcept {
    const char one = 1;
    if (::send(send_fd, &one, sizeof one, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
        return 0;
    }
    const int e = errno;
    switch (e) {
    case EAGAIN:
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
    case EPERM:  // the receiver connected itself elsewhere: it hears nobody now
        return 0;
    default:
        return e;
    }
}

/// Consumes everything pending on `recv_fd` without ever blocking (MSG_DONTWAIT per call,
/// whatever O_NONBLOCK says); usually one recvmmsg. True if anything was pending.
inline bool drain(int recv_fd) noexcept {
    constexpr unsigned kBatch = 16;
    char bytes[kBatch];
    iovec iov[kBatch];
    mmsghdr msgs[kBatch] = {};
    for (unsigned i = 0; i < kBatch; ++i) {
        iov[i] = {&bytes[i], 1};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    bool any = false;
    // A pending socket error (sk_err) is returned once and cleared: look again after it. The
    // queue is bounded (max_dgram_qlen), so a full batch is followed by a short one; a sender
    // refilling it meanwhile cannot keep us here (at most 4 calls; what is left stays pending).
    for (int call = 0; call < 4; ++call) {
        const int n = ::recvmmsg(recv_fd, msgs, kBatch, MSG_DONTWAIT, nullptr);
        if (n < 0) {
            if (errno == EAGAIN || errno == EBADF || errno == ENOTSOCK || errno == EINVAL) {
                break;
            }
            continue;
        }
        any = any || n > 0;
        if (n < static_cast<int>(kBatch)) {
            break;
        }
    }
    return any;
}

}  // namespace hv::hvmin::evtchn_signal
