// Console ring ends (io/console.h, xen-abi.md §8): the backend's (hv-min: drains `out`, fills
// `in`) and the guest's (libhv's pump: fills `out`, drains `in`). Pure memory, no syscalls, so
// the fuzzer drives the backend end directly. Layer: hv-min (L1). One thread per end.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>
#include <span>

#include "hv/rings/protocols/console.hpp"

namespace hv::hvmin::console {

using rings::XENCONS_RING_IDX;
using rings::xencons_interface;

inline constexpr std::size_t kOutSize = sizeof(xencons_interface::out);
inline constexpr std::size_t kInSize = sizeof(xencons_interface::in);

/// hv-min's end. Keeps its own copies of the indices it owns (out_cons, in_prod): the guest may
/// scribble the shared ones, and what the backend believes is the private copy.
class BackEnd {
public:
    explicit BackEnd(xencons_interface* intf) noexcept : intf_(intf) {
        out_cons_ = std::atomic_ref(intf_->out_cons).load(std::memory_order_relaxed);
        in_prod_ = std::atomic_ref(intf_->in_prod).load(std::memory_order_relaxed);
    }

    /// Copies all pending output into `buf` (at least kOutSize bytes) and consumes it.
    /// Returns the byte count, or -1 if out_prod is impossible (prod - cons > kOutSize): the
    /// ring is corrupt and nothing was consumed.
    long take_output(std::span<char> buf) noexcept {
        // ORDER: acquire pairs with the guest's release store of out_prod (after its bytes).
        const XENCONS_RING_IDX prod = std::atomic_ref(intf_->out_prod).load(std::memory_order_acquire);
        const XENCONS_RING_IDX n = prod - out_cons_;
        if (n > kOutSize || buf.size() < n) {
            return -1;
        }
        for (XENCONS_RING_IDX i = 0; i < n; ++i) {
            // GUEST: copied once; the guest may rewrite the bytes at any time.
            buf[i] = intf_->out[(out_cons_ + i) & (kOutSize - 1)];
        }
        out_cons_ = prod;
        // ORDER: release: the copy above is done before the guest may reuse the bytes.
        std::atomic_ref(intf_->out_cons).store(out_cons_, std::memory_order_release);
        return static_cast<long>(n);
    }

    /// Puts as much of `data` as fits into `in`. Returns the byte count, or -1 if in_cons is
    /// impossible (in_prod - in_cons > kInSize).
    long put_input(std::span<const char> data) noexcept {
        // ORDER: acquire pairs with the guest's release store of in_cons.
        const XENCONS_RING_IDX cons = std::atomic_ref(intf_->in_cons).load(std::memory_order_acquire);
        const XENCONS_RING_IDX used = in_prod_ - cons;
        if (used > kInSize) {
            return -1;
        }
        const std::size_t room = kInSize - used;
        const std::size_t n = data.size() < room ? data.size() : room;
        for (std::size_t i = 0; i < n; ++i) {
            intf_->in[(in_prod_ + i) & (kInSize - 1)] = data[i];
        }
        in_prod_ += static_cast<XENCONS_RING_IDX>(n);
        // ORDER: release pairs with the guest's acquire load of in_prod (bytes before index).
        std::atomic_ref(intf_->in_prod).store(in_prod_, std::memory_order_release);
        return static_cast<long>(n);
    }

    void set_connection(std::uint8_t v) noexcept {
        // ORDER: release: the guest reads it with acquire before trusting the ring is serviced.
        std::atomic_ref(intf_->connection).store(v, std::memory_order_release);
    }

private:
    xencons_interface* intf_;
    XENCONS_RING_IDX out_cons_ = 0;
    XENCONS_RING_IDX in_prod_ = 0;
};

/// The guest's end (libhv). hv-min is trusted, but indices are still checked.
class FrontEnd {
public:
    explicit FrontEnd(xencons_interface* intf) noexcept : intf_(intf) {
        out_prod_ = std::atomic_ref(intf_->out_prod).load(std::memory_order_relaxed);
        in_cons_ = std::atomic_ref(intf_->in_cons).load(std::memory_order_relaxed);
    }

    /// Free bytes in `out`, or -1 if out_cons is impossible.
    long out_room() const noexcept {
        // ORDER: acquire pairs with the backend's release store of out_cons.
        const XENCONS_RING_IDX cons = std::atomic_ref(intf_->out_cons).load(std::memory_order_acquire);
        const XENCONS_RING_IDX used = out_prod_ - cons;
        return used > kOutSize ? -1 : static_cast<long>(kOutSize - used);
    }
    bool out_empty() const noexcept { return out_room() == static_cast<long>(kOutSize); }

    /// Writes up to out_room() bytes of `data`; returns how many.
    std::size_t put_output(std::span<const char> data) noexcept {
        const long room = out_room();
        if (room <= 0) {
            return 0;
        }
        const std::size_t n = data.size() < static_cast<std::size_t>(room) ? data.size()
                                                                         : static_cast<std::size_t>(room);
        for (std::size_t i = 0; i < n; ++i) {
            intf_->out[(out_prod_ + i) & (kOutSize - 1)] = data[i];
        }
        out_prod_ += static_cast<XENCONS_RING_IDX>(n);
        // ORDER: release pairs with the backend's acquire load of out_prod.
        std::atomic_ref(intf_->out_prod).store(out_prod_, std::memory_order_release);
        return n;
    }

    /// Copies up to buf.size() pending input bytes and consumes them; -1 if in_prod is impossible.
    long take_input(std::span<char> buf) noexcept {
        // ORDER: acquire pairs with the backend's release store of in_prod.
        const XENCONS_RING_IDX prod = std::atomic_ref(intf_->in_prod).load(std::memory_order_acquire);
        const XENCONS_RING_IDX avail = prod - in_cons_;
        if (avail > kInSize) {
            return -1;
        }
        const std::size_t n = avail < buf.size() ? avail : buf.size();
        for (std::size_t i = 0; i < n; ++i) {
            buf[i] = intf_->in[(in_cons_ + i) & (kInSize - 1)];
        }
        in_cons_ += static_cast<XENCONS_RING_IDX>(n);
        // ORDER: release pairs with the backend's acquire load of in_cons.
        std::atomic_ref(intf_->in_cons).store(in_cons_, std::memory_order_release);
        return static_cast<long>(n);
    }

private:
    xencons_interface* intf_;
    XENCONS_RING_IDX out_prod_ = 0;
    XENCONS_RING_IDX in_cons_ = 0;
};

}  // namespace hv::hvmin::console
