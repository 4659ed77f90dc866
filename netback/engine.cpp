// Error category and the offload-header check shared by every NetEngine. Any thread.
#include "engine.hpp"

namespace hv::net {
namespace {

class NetCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "hv.net"; }
    std::string message(int c) const override {
        switch (static_cast<Errc>(c)) {
            case Errc::busy:
                return "engine busy";
            case Errc::frame_too_big:
                return "frame too big";
            case Errc::frame_too_small:
                return "frame shorter than an Ethernet header";
            case Errc::bad_offload:
                return "inconsistent offload header";
            case Errc::buffer_too_small:
                return "receive buffer too small";
            case Errc::protocol:
                return "unexpected answer from peer";
        }
        return "unknown hv.net error";
    }
};

}  // namespace

const std::error_category& net_category() noexcept {
    static const NetCategory c;
    return c;
}

hv::Result<void> detail::check_offload_slow(const VnetHdr& hdr, std::size_t frame_len,
                                            const Features& features) noexcept {
    if (frame_len < 14) {
        return hv::fail(Errc::frame_too_small);
    }
    if (frame_len > max_gso_frame_bytes) {
        return hv::fail(Errc::frame_too_big);
    }
    if ((hdr.flags & VnetHdr::F_NEEDS_CSUM) != 0) {
        if (!features.csum) {
            return hv::fail(Errc::bad_offload);
        }
        if (std::size_t{hdr.csum_start} + hdr.csum_offset + 2 > frame_len) {
            return hv::fail(Errc::bad_offload);
        }
    }
    const std::uint8_t gso = static_cast<std::uint8_t>(hdr.gso_type & ~VnetHdr::GSO_ECN);
    switch (gso) {
        case VnetHdr::GSO_NONE:
            return {};
        case VnetHdr::GSO_TCPV4:
            if (!features.tso4) {
                return hv::fail(Errc::frame_too_big);
            }
            break;
        case VnetHdr::GSO_TCPV6:
            if (!features.tso6) {
                return hv::fail(Errc::frame_too_big);
            }
            break;
        default:
            return hv::fail(Errc::bad_offload);
    }
    if (hdr.gso_size == 0 || (hdr.flags & VnetHdr::F_NEEDS_CSUM) == 0) {
        return hv::fail(Errc::bad_offload);
    }
    return {};
}

}  // namespace hv::net
