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
//
// The shared words (issue #2, spinning waits): a socket send plus a receive cost about twice an
// eventfd's, so while a receiver spins the datagram is skipped. Each interdomain channel has a
// slot of wire::kEvtchnWordsSlotBytes in a page that only its two domains hold (hv-min makes
// the page, zeroes a slot before handing it out and never reads it); per side a `pending` word
// (set by the other side's notify, taken by this side's ack) and a `spinning` word (set by this
// side while it spins in wait). Dekker: the receiver publishes spinning, spins on pending, clears
// spinning and reads pending again before it sleeps on its socket; the sender sets pending and,
// only if it then reads spinning as 0, sends the datagram. So an event is either seen by the
// spinner or comes with a datagram. Whatever a domain writes there only invents events (legal
// in Xen) or drops its own sends on a channel it is an end of; hv-min's raises (VIRQs, close
// and death wake-ups, the console) use only the sockets.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>

#include "hv/spin.hpp"

namespace hv::hvmin::evtchn_signal {

/// The byte a datagram carries: hv-min's raises (and the console's) send kFromHvmin; libhv's
/// notify() on a channel with shared words sends kFromPeer, whose event is in the word (so
/// such a datagram only wakes a sleeper and is never an event by itself).
inline constexpr char kFromHvmin = 1;
inline constexpr char kFromPeer = 2;

/// Sets the port behind `send_fd` pending: one datagram, never blocks, never raises SIGPIPE.
/// Returns 0, or an errno: EAGAIN is returned as 0 (the receiver's queue is full, so the port is
/// pending already: sends coalesce), and so are the errors of a receiver that is gone or a
/// sender that was shut down or disconnected by whoever holds it (the event is dropped, as Xen
/// drops sends on a port that is not bound).
inline int send(int send_fd, char what = kFromHvmin) noexcept {
    if (::send(send_fd, &what, sizeof what, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
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
/// whatever O_NONBLOCK says); usually one recvmmsg. True if anything was pending. `not_peer`
/// (if given) is set when a datagram other than a kFromPeer one was among them.
inline bool drain(int recv_fd, bool* not_peer = nullptr) noexcept {
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
        for (int i = 0; not_peer != nullptr && i < n; ++i) {
            if (msgs[i].msg_len != 1 || bytes[i] != kFromPeer) {
                *not_peer = true;
            }
        }
        if (n < static_cast<int>(kBatch)) {
            break;
        }
    }
    return any;
}

/// One side of a channel's slot (the slot is Words[2]: side 0 is the port alloc_unbound made,
/// side 1 the port that bound it).
struct Words {
    std::uint32_t pending;   // kPending* bits; any non-zero value is an event
    std::uint32_t spinning;  // non-zero while this side spins in wait
};
static_assert(sizeof(Words) == 8);
inline constexpr std::uint32_t kPendingEvent = 1;
inline constexpr std::uint32_t kPendingSent = 2;  // a datagram was (or is being) sent with it

/// notify() on a channel with shared words: sets the peer's `pending`; sends the datagram only
/// if the peer is not spinning. Same return value as send().
inline int notify_words(Words& peer, int send_fd) noexcept {
    std::atomic_ref<std::uint32_t> pending(peer.pending);
    // ORDER: the store of pending before the load of spinning (seq_cst RMW: a full fence), as
    // the spinner's clear of spinning is before its last load of pending.
    pending.fetch_or(kPendingEvent, std::memory_order_seq_cst);
    if (std::atomic_ref<std::uint32_t>(peer.spinning).load(std::memory_order_seq_cst) != 0) {
        return 0;  // it sees pending before it sleeps
    }
    pending.fetch_or(kPendingSent, std::memory_order_relaxed);
    return send(send_fd, kFromPeer);
}

/// True if this side's word says pending (does not consume it).
inline bool word_pending(Words& mine) noexcept {
    return (std::atomic_ref<std::uint32_t>(mine.pending).load(std::memory_order_acquire) &
            kPendingEvent) != 0;
}

/// ack() with shared words: takes the word, and drains the receiver unless the word says that
/// no datagram came with the event (the spinning path: no syscall). True for the word's event
/// or a datagram that is not the peer's (hv-min's raises); a peer's datagram is only the
/// wake-up of an event the word carries, so one found without it (its event was taken by an
/// earlier ack, between the peer's two word updates) is not an event again.
inline bool consume_words(Words& mine, int recv_fd) noexcept {
    const std::uint32_t v =
        std::atomic_ref<std::uint32_t>(mine.pending).exchange(0, std::memory_order_acq_rel);
    const bool event = (v & kPendingEvent) != 0;
    if (event && (v & kPendingSent) == 0) {
        return true;
    }
    bool not_peer = false;
    (void)drain(recv_fd, &not_peer);
    return event || not_peer;
}

/// Spins for up to `budget` until this side is pending, with `spinning` published so that the
/// peer skips its datagram; the receiver is probed too every 256 probes (hv-min raises only
/// there). Clears `spinning` and reads `pending` once more before returning false: the caller
/// may then sleep on the receiver without losing an event.
inline bool spin_words(Words& mine, int recv_fd, std::chrono::nanoseconds budget) noexcept {
    std::atomic_ref<std::uint32_t> spinning(mine.spinning);
    std::atomic_ref<std::uint32_t> pending(mine.pending);
    spinning.store(1, std::memory_order_seq_cst);
    unsigned probes = 0;
    const bool hit = hv::spin_until(
        [&] {
            if ((pending.load(std::memory_order_acquire) & kPendingEvent) != 0) {
                return true;
            }
            if ((++probes & 255U) != 0) {
                return false;
            }
            pollfd p{recv_fd, POLLIN, 0};
            return ::poll(&p, 1, 0) == 1;
        },
        budget);
    // ORDER: the clear of spinning before the last load of pending (see notify_words).
    spinning.store(0, std::memory_order_seq_cst);
    return hit || (pending.load(std::memory_order_seq_cst) & kPendingEvent) != 0;
}

}  // namespace hv::hvmin::evtchn_signal
