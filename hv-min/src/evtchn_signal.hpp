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
// The shared words (issue #2): a socket send plus a receive cost about twice an eventfd's, so
// the datagram is skipped whenever the receiver waits in wait() rather than polling its socket.
// Each interdomain channel has a slot of wire::kEvtchnWordsSlotBytes in a page that only its two
// domains hold (hv-min makes the page and zeroes a slot before handing it out); per side a
// `pending` word (set by the other side's notify and by hv-min's raises, taken by this side's
// ack) and a `state` word that says how this side waits: kIdle (not in wait(), or polling its
// socket: a notify sends the datagram), kSpinning (spinning on pending: a notify only sets it) or
// kSleeping (in FUTEX_WAIT on pending: a notify sets it and FUTEX_WAKEs). Dekker: the receiver
// stores its state and then reads pending before it spins or sleeps; the sender sets pending and
// then reads the state, so either the receiver sees the event or the sender sees how to wake it
// (FUTEX_WAIT itself compares the word, so a wake between the read and the sleep is not lost).
// Whatever a domain writes there only invents events (legal in Xen) or drops events on a channel
// it is an end of. hv-min's raises (close and death wake-ups, EVTCHNOP_send, a bind) send their
// datagram, then set the word and FUTEX_WAKE through hv-min's own mapping: an RMW whose result
// it ignores and a wake, neither of which can block or trusts the page. VIRQs and the console
// have no words: sockets only.
#pragma once

#include <linux/futex.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>

#include "hv/spin.hpp"

namespace hv::hvmin::evtchn_signal {

/// The byte a datagram carries: hv-min's raises (and the console's) send kFromHvmin; libhv's
/// Sleeps in FUTEX_WAIT on `word` (shared) while it holds `v`, at most `left` (negative: no
/// bound). Returns at once if the word is no longer `v`; false only if the time ran out.
inline bool futex_wait(std::uint32_t* word, std::uint32_t v,
                       std::chrono::nanoseconds left) noexcept {
    timespec rel{};
    timespec* relp = nullptr;
    if (left.count() >= 0) {
        rel.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
        rel.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
        relp = &rel;
    }
    // 0 (woken), EAGAIN (the word changed), EINTR: look again; ETIMEDOUT: time is up.
    return ::syscall(SYS_futex, word, FUTEX_WAIT, v, relp, nullptr, 0) == 0 || errno != ETIMEDOUT;
}

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
    std::uint32_t pending;  // kPending* bits; any value with kPendingEvent is an event
    std::uint32_t state;    // how this side waits: kIdle, kSpinning, kSleeping
};
static_assert(sizeof(Words) == 8);
inline constexpr std::uint32_t kPendingEvent = 1;
inline constexpr std::uint32_t kPendingSent = 2;  // a datagram was (or is being) sent with it
inline constexpr std::uint32_t kIdle = 0;      // anything not listed here counts as kIdle
inline constexpr std::uint32_t kSpinning = 1;
inline constexpr std::uint32_t kSleeping = 2;

/// Wakes one FUTEX_WAIT on `word` (a shared futex: any process mapping the same page). Never
/// blocks. One: a binding has one waiter at a time, and a domain that parks threads of its own
/// on a word of its channel can then take at most that channel's wake-ups, never make a wake
/// (hv-min's raises) cost more than one.
inline void futex_wake(std::uint32_t* word) noexcept {
    (void)::syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

/// notify() on a channel with shared words: sets the peer's `pending`, then wakes it the way
/// its `state` asks for: nothing while it spins, a futex wake while it sleeps in wait(), the
/// datagram otherwise (it may be polling its socket). Same return value as send().
inline int notify_words(Words& peer, int send_fd) noexcept {
    std::atomic_ref<std::uint32_t> pending(peer.pending);
    // ORDER: the store of pending before the load of state (seq_cst RMW: a full fence), as the
    // receiver's store of state is before its load of pending.
    pending.fetch_or(kPendingEvent, std::memory_order_seq_cst);
    const std::uint32_t state =
        std::atomic_ref<std::uint32_t>(peer.state).load(std::memory_order_seq_cst);
    if (state == kSpinning) {
        return 0;  // it sees pending before it sleeps
    }
    if (state == kSleeping) {
        futex_wake(&peer.pending);  // FUTEX_WAIT compares pending: set before this wake
        return 0;
    }
    pending.fetch_or(kPendingSent, std::memory_order_relaxed);
    return send(send_fd, kFromPeer);
}

/// hv-min's raise on a port with shared words, after its datagram (so that an ack that takes
/// the word finds the datagram too): marks the word pending and wakes a futex sleeper. Only an
/// RMW (its result unused) and a wake on hv-min's own mapping: nothing the domains write there
/// can make it block or fault (the page is sealed against shrinking).
inline void raise_words(Words& w) noexcept {
    std::atomic_ref<std::uint32_t>(w.pending).fetch_or(kPendingEvent | kPendingSent,
                                                       std::memory_order_seq_cst);
    futex_wake(&w.pending);
}

/// True if this side's word says pending (does not consume it).
inline bool word_pending(Words& mine) noexcept {
    return (std::atomic_ref<std::uint32_t>(mine.pending).load(std::memory_order_acquire) &
            kPendingEvent) != 0;
}

/// ack() with shared words: takes the word, and drains the receiver unless the word says that
/// no datagram came with the event (the spinning and sleeping paths: no syscall). True for the
/// word's event or a datagram that is not the peer's (hv-min's raises); a peer's datagram is
/// only the wake-up of an event the word carries, so one found without it (its event was taken
/// by an earlier ack, between the peer's two word updates) is not an event again. When the
/// drain found anything, the word is taken once more: a peer's datagram drained here may be
/// the wake-up of an event set after the first exchange, and a caller that polls fd() next
/// would never hear of that event (its datagram is gone).
inline bool consume_words(Words& mine, int recv_fd) noexcept {
    std::atomic_ref<std::uint32_t> pending(mine.pending);
    std::uint32_t v = pending.exchange(0, std::memory_order_acq_rel);
    if ((v & kPendingEvent) != 0 && (v & kPendingSent) == 0) {
        return true;
    }
    bool not_peer = false;
    if (drain(recv_fd, &not_peer)) {
        // ORDER: after the drain: a drained datagram's event was set before it was sent.
        v |= pending.exchange(0, std::memory_order_acq_rel);
    }
    return (v & kPendingEvent) != 0 || not_peer;
}

/// Spins for up to `budget` until this side is pending, with `state` kSpinning so that the peer
/// skips its datagram; the receiver is probed too every 256 probes (a datagram sent before the
/// spin began). Sets `state` back to kIdle and reads `pending` once more before returning
/// false: the caller may then sleep (sleep_words) without losing an event.
inline bool spin_words(Words& mine, int recv_fd, std::chrono::nanoseconds budget) noexcept {
    std::atomic_ref<std::uint32_t> state(mine.state);
    std::atomic_ref<std::uint32_t> pending(mine.pending);
    state.store(kSpinning, std::memory_order_seq_cst);
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
    // ORDER: the store of state before the last load of pending (see notify_words).
    state.store(kIdle, std::memory_order_seq_cst);
    return hit || (pending.load(std::memory_order_seq_cst) & kPendingEvent) != 0;
}

/// Sleeps in FUTEX_WAIT on this side's `pending` until it says pending or `timeout` has passed
/// (negative: no bound), with `state` kSleeping so that the peer's notify wakes the futex and
/// sends no datagram (hv-min's raises set the word and wake it too). A wake-up that finds no
/// event (EINTR, a peer that rewrites the words) publishes the state again and sleeps for what
/// is left. Sets `state` back to kIdle before it returns. True if pending.
inline bool sleep_words(Words& mine, std::chrono::milliseconds timeout) noexcept {
    std::atomic_ref<std::uint32_t> state(mine.state);
    std::atomic_ref<std::uint32_t> pending(mine.pending);
    const auto end = std::chrono::steady_clock::now() + timeout;
    bool hit = false;
    for (;;) {
        // ORDER: the store of state before the load of pending (see notify_words).
        state.store(kSleeping, std::memory_order_seq_cst);
        const std::uint32_t v = pending.load(std::memory_order_seq_cst);
        if ((v & kPendingEvent) != 0) {
            hit = true;
            break;
        }
        auto left = std::chrono::nanoseconds{-1};
        if (timeout.count() >= 0) {
            left = end - std::chrono::steady_clock::now();
            if (left <= left.zero()) {
                break;
            }
        }
        (void)futex_wait(&mine.pending, v, left);  // whatever it returns: look again
    }
    state.store(kIdle, std::memory_order_seq_cst);
    return hit;
}

}  // namespace hv::hvmin::evtchn_signal
