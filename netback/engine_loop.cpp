// Loopback NetEngine: frames sent come back from receive() in order. Preallocated slots, an
// eventfd as notify_fd. Used by benchmarks and the engine contract tests. One thread.
#include <sys/eventfd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine.hpp"

namespace hv::net {
namespace {

class LoopEngine final : public NetEngine {
public:
    LoopEngine(hv::UniqueFd efd, unsigned capacity, Features f)
        : efd_(std::move(efd)), slots_(capacity), features_(f) {
        for (auto& s : slots_) {
            s.data.resize(max_gso_frame_bytes);
        }
    }

    hv::Result<void> send(const VnetHdr& hdr, std::span<const iovec> frame) noexcept override {
        std::size_t len = 0;
        for (const auto& v : frame) {
            len += v.iov_len;
        }
        HV_TRY(check_offload(hdr, len, features_));
        if (count_ == slots_.size()) {
            return hv::fail(Errc::busy);
        }
        Slot& s = slots_[(head_ + count_) % slots_.size()];
        std::size_t at = 0;
        for (const auto& v : frame) {
            if (v.iov_len != 0) {
                std::memcpy(s.data.data() + at, v.iov_base, v.iov_len);
                at += v.iov_len;
            }
        }
        s.hdr = hdr;
        s.len = static_cast<std::uint32_t>(len);
        if (count_++ == 0) {
            const std::uint64_t one = 1;
            // Level semantics: the counter stays non-zero while frames are queued.
            if (::write(efd_.get(), &one, sizeof one) != sizeof one) {
                --count_;
                return hv::fail_errno();
            }
        }
        return {};
    }

    hv::Result<unsigned> receive(std::span<RxBuffer> out) noexcept override {
        unsigned n = 0;
        while (n < out.size() && count_ > 0) {
            RxBuffer& b = out[n];
            if (b.data.size() < max_frame_bytes()) {
                if (n == 0) {
                    return hv::fail(Errc::buffer_too_small);
                }
                break;
            }
            Slot& s = slots_[head_];
            std::memcpy(b.data.data(), s.data.data(), s.len);
            b.len = s.len;
            b.hdr = s.hdr;
            head_ = (head_ + 1) % slots_.size();
            --count_;
            ++n;
        }
        if (n > 0 && count_ == 0) {
            std::uint64_t v = 0;
            [[maybe_unused]] const auto r = ::read(efd_.get(), &v, sizeof v);
        }
        return n;
    }

    hv::Result<std::size_t> receive_scattered(VnetHdr& hdr,
                                              std::span<const iovec> bufs) noexcept override {
        std::size_t cap = 0;
        for (const auto& b : bufs) {
            cap += b.iov_len;
        }
        if (cap < max_frame_bytes()) {
            return hv::fail(Errc::buffer_too_small);
        }
        if (count_ == 0) {
            return std::size_t{0};
        }
        Slot& s = slots_[head_];
        std::size_t at = 0;
        for (const auto& b : bufs) {
            const std::size_t n = std::min<std::size_t>(b.iov_len, s.len - at);
            std::memcpy(b.iov_base, s.data.data() + at, n);
            at += n;
            if (at == s.len) {
                break;
            }
        }
        hdr = s.hdr;
        const std::size_t len = s.len;
        head_ = (head_ + 1) % slots_.size();
        if (--count_ == 0) {
            std::uint64_t v = 0;
            [[maybe_unused]] const auto r = ::read(efd_.get(), &v, sizeof v);
        }
        return len;
    }

    int notify_fd() const noexcept override { return efd_.get(); }
    Features features() const noexcept override { return features_; }
    std::size_t max_frame_bytes() const noexcept override { return max_gso_frame_bytes; }

private:
    struct Slot {
        std::vector<std::byte> data;
        VnetHdr hdr{};
        std::uint32_t len = 0;
    };
    hv::UniqueFd efd_;
    std::vector<Slot> slots_;
    std::size_t head_ = 0;
    std::size_t count_ = 0;
    Features features_;
};

}  // namespace

hv::Result<std::unique_ptr<NetEngine>> make_loop_engine(unsigned capacity, Features features) {
    if (capacity == 0) {
        return hv::fail_errno(EINVAL);
    }
    hv::UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd) {
        return hv::fail_errno();
    }
    return std::unique_ptr<NetEngine>(new LoopEngine(std::move(efd), capacity, features));
}

}  // namespace hv::net
