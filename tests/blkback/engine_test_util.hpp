// Helpers for the blkback engine tests: aligned buffers, patterns, waiting for completions.
#pragma once

#include <poll.h>
#include <sys/uio.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "blkback/engine.hpp"

namespace hv::blk::test {

/// 4 KiB-aligned zeroed bytes (O_DIRECT wants aligned memory).
class AlignedBuf {
public:
    explicit AlignedBuf(std::size_t len)
        : len_(len), p_(static_cast<std::byte*>(std::aligned_alloc(4096, round(len)))) {
        std::memset(p_.get(), 0, round(len));
    }
    std::byte* data() const { return p_.get(); }
    std::size_t size() const { return len_; }
    iovec iov(std::size_t off, std::size_t len) const { return {p_.get() + off, len}; }
    void fill(std::uint32_t seed) {
        std::mt19937 rng(seed);
        for (std::size_t i = 0; i < len_; ++i) {
            p_.get()[i] = static_cast<std::byte>(rng());
        }
    }
    bool same(const AlignedBuf& o) const {
        return len_ == o.len_ && std::memcmp(p_.get(), o.p_.get(), len_) == 0;
    }
    bool all_zero() const {
        for (std::size_t i = 0; i < len_; ++i) {
            if (p_.get()[i] != std::byte{0}) {
                return false;
            }
        }
        return true;
    }

private:
    static std::size_t round(std::size_t n) { return (n + 4095) / 4096 * 4096; }
    struct Free {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::size_t len_;
    std::unique_ptr<std::byte, Free> p_;
};

/// Reaps until `want` completions arrived or `timeout_ms` passed, waiting on notify_fd().
inline std::vector<IoCompletion> reap_n(BlockEngine& e, std::size_t want, int timeout_ms = 5000) {
    std::vector<IoCompletion> got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    IoCompletion buf[16];
    while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
        const unsigned n = e.reap(buf);
        got.insert(got.end(), buf, buf + n);
        if (n == 0 && got.size() < want) {
            pollfd p{e.notify_fd(), POLLIN, 0};
            (void)::poll(&p, 1, 100);
        }
    }
    return got;
}

/// Queues nothing else: submit, then exactly one completion for `cookie`; returns its result.
inline std::int32_t run_one(BlockEngine& e, std::uint64_t cookie) {
    auto s = e.submit();
    REQUIRE(s.has_value());
    auto got = reap_n(e, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].cookie == cookie);
    return got[0].result;
}

}  // namespace hv::blk::test
