// Sink NetEngine: a switch port that discards. Every frame sent is checked like any engine's
// (check_offload), counted and dropped; receive() never has a frame. The one-direction peer of a
// DPDK rxonly port (hvbench's pkt64_rings_tx cases), and a place to send a guest's traffic when
// only the guest side is wanted. Layer: L3. One thread (the queue's worker).
#include <sys/eventfd.h>

#include "engine.hpp"

namespace hv::net {
namespace {

class SinkEngine final : public NetEngine {
public:
    SinkEngine(hv::UniqueFd efd, Features f) : efd_(std::move(efd)), features_(f) {}

    hv::Result<void> send(const VnetHdr& hdr, std::span<const iovec> frame) noexcept override {
        std::size_t len = 0;
        for (const auto& v : frame) {
            len += v.iov_len;
        }
        HV_TRY(check_offload(hdr, len, features_));
        return {};  // taken: the caller counts it (tx_packets) and answers OKAY
    }

    hv::Result<unsigned> receive(std::span<RxBuffer> /*out*/) noexcept override { return 0U; }

    /// Never readable: an eventfd nobody writes, so a queue's poll set keeps its shape.
    int notify_fd() const noexcept override { return efd_.get(); }
    Features features() const noexcept override { return features_; }
    std::size_t max_frame_bytes() const noexcept override { return max_gso_frame_bytes; }

private:
    hv::UniqueFd efd_;
    Features features_;
};

}  // namespace

hv::Result<std::unique_ptr<NetEngine>> make_sink_engine(Features features) {
    hv::UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd) {
        return hv::fail_errno();
    }
    return std::unique_ptr<NetEngine>(new SinkEngine(std::move(efd), features));
}

}  // namespace hv::net
