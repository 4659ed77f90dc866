// Tap NetEngine: one tap queue fd with IFF_VNET_HDR; send = one writev (header + frame),
// receive = readv per frame until EAGAIN. The fd is non-blocking; one thread.
#include <unistd.h>

#include <array>
#include <cerrno>
#include <vector>

#include "engine.hpp"
#include "hv/log.hpp"

namespace hv::net {
namespace {

constexpr std::size_t max_iov = 64;

class TapEngine final : public NetEngine {
public:
    TapEngine(hv::UniqueFd fd, Features f, unsigned mtu) : fd_(std::move(fd)), features_(f) {
        max_frame_ = (f.tso4 || f.tso6) ? max_gso_frame_bytes : std::size_t{mtu} + 14 + 4;
    }

    hv::Result<void> send(const VnetHdr& hdr, std::span<const iovec> frame) noexcept override {
        if (frame.size() + 1 > max_iov) {
            return hv::fail(Errc::frame_too_big);
        }
        std::array<iovec, max_iov> iov;
        iov[0] = {const_cast<VnetHdr*>(&hdr), sizeof hdr};
        std::size_t len = 0;
        for (std::size_t i = 0; i < frame.size(); ++i) {
            iov[i + 1] = frame[i];
            len += frame[i].iov_len;
        }
        HV_TRY(check_offload(hdr, len, features_));
        if ((hdr.gso_type == VnetHdr::GSO_NONE) && len > max_frame_) {
            return hv::fail(Errc::frame_too_big);
        }
        const ssize_t n = ::writev(fd_.get(), iov.data(), static_cast<int>(frame.size() + 1));
        if (n < 0) {
            if (errno == EAGAIN || errno == ENOBUFS) {
                return hv::fail(Errc::busy);
            }
            return hv::fail_errno();
        }
        // tun takes a frame whole or not at all.
        return {};
    }

    hv::Result<unsigned> receive(std::span<RxBuffer> out) noexcept override {
        unsigned n = 0;
        while (n < out.size()) {
            RxBuffer& b = out[n];
            if (b.data.size() < max_frame_) {
                if (n == 0) {
                    return hv::fail(Errc::buffer_too_small);
                }
                break;
            }
            // Exactly max_frame_ bytes of buffer, then one spill byte: tun truncates a longer
            // frame silently, and landing in the spill byte is how we notice.
            iovec iov[3] = {{&b.hdr, sizeof b.hdr}, {b.data.data(), max_frame_}, {&spill_, 1}};
            const ssize_t r = ::readv(fd_.get(), iov, 3);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    break;
                }
                if (n > 0) {
                    break;  // report the error on the next call, after the frames we have
                }
                return hv::fail_errno();
            }
            const auto got = static_cast<std::size_t>(r);
            if (got < sizeof b.hdr) {
                return hv::fail(Errc::protocol);
            }
            if (got - sizeof b.hdr > max_frame_) {
                // Longer than this engine was built for (the device's MTU was raised behind
                // it): consumed and truncated by tun; drop it rather than report a torn frame.
                ++oversize_dropped_;
                HV_LOG_RL(warn, "tap: dropped a frame over %zu bytes", max_frame_);
                continue;
            }
            b.len = static_cast<std::uint32_t>(got - sizeof b.hdr);
            ++n;
        }
        return n;
    }

    hv::Result<std::size_t> receive_scattered(VnetHdr& hdr,
                                              std::span<const iovec> bufs) noexcept override {
        if (bufs.size() + 2 > max_iov) {
            return hv::fail(Errc::buffer_too_small);
        }
        std::array<iovec, max_iov> iov;
        iov[0] = {&hdr, sizeof hdr};
        std::size_t cap = 0;
        for (std::size_t i = 0; i < bufs.size(); ++i) {
            iov[i + 1] = bufs[i];
            cap += bufs[i].iov_len;
        }
        if (cap < max_frame_) {
            return hv::fail(Errc::buffer_too_small);
        }
        iov[bufs.size() + 1] = {&spill_, 1};  // a frame longer than the buffers lands here
        for (;;) {
            const ssize_t r = ::readv(fd_.get(), iov.data(), static_cast<int>(bufs.size() + 2));
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return std::size_t{0};
                }
                return hv::fail_errno();
            }
            const auto got = static_cast<std::size_t>(r);
            if (got < sizeof hdr) {
                return hv::fail(Errc::protocol);
            }
            if (got - sizeof hdr > max_frame_) {
                ++oversize_dropped_;
                HV_LOG_RL(warn, "tap: dropped a frame over %zu bytes", max_frame_);
                continue;
            }
            return got - sizeof hdr;
        }
    }

    int notify_fd() const noexcept override { return fd_.get(); }
    Features features() const noexcept override { return features_; }
    std::size_t max_frame_bytes() const noexcept override { return max_frame_; }

private:
    hv::UniqueFd fd_;
    Features features_;
    std::size_t max_frame_ = 0;
    std::uint64_t oversize_dropped_ = 0;
    std::uint8_t spill_ = 0;
};

}  // namespace

hv::Result<std::unique_ptr<NetEngine>> make_tap_engine(hv::UniqueFd queue_fd, Features features,
                                                       unsigned mtu) {
    if (!queue_fd) {
        return hv::fail_errno(EBADF);
    }
    return std::unique_ptr<NetEngine>(new TapEngine(std::move(queue_fd), features, mtu));
}

}  // namespace hv::net
