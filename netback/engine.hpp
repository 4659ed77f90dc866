// NetEngine: the L2 -> L3 seam of netback (style.md §1, §12). A RingWorker hands frames to an
// engine and takes frames from it; the engine sees iovecs, a virtio-net header and lengths,
// never ring structs or grant refs. One instance per RingWorker thread; not thread-safe.
#pragma once

#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::net {

/// Errors of the netback host side (category "hv.net").
enum class Errc : int {
    busy = 1,        // engine full: not a failure, retry after receive()/notify (backpressure)
    frame_too_big,   // frame longer than max_frame_bytes(), or a GSO frame the engine does not offer
    frame_too_small, // shorter than an Ethernet header
    bad_offload,     // inconsistent virtio-net header (csum_start past the frame, unknown gso_type)
    buffer_too_small,// a receive buffer below max_frame_bytes()
    protocol,        // a peer (netlink, ovs-vsctl) answered something we cannot parse
};
const std::error_category& net_category() noexcept;
inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), net_category()};
}

/// struct virtio_net_hdr_v1 (12 bytes, little-endian on every host we build for), the header
/// tap's IFF_VNET_HDR puts in front of every frame. Field names copy Linux's.
struct VnetHdr {
    static constexpr std::uint8_t F_NEEDS_CSUM = 1;  // csum_start/csum_offset valid, L4 sum blank
    static constexpr std::uint8_t F_DATA_VALID = 2;  // checksum already verified
    static constexpr std::uint8_t GSO_NONE = 0;
    static constexpr std::uint8_t GSO_TCPV4 = 1;
    static constexpr std::uint8_t GSO_TCPV6 = 4;
    static constexpr std::uint8_t GSO_ECN = 0x80;

    std::uint8_t flags = 0;
    std::uint8_t gso_type = GSO_NONE;
    std::uint16_t hdr_len = 0;      // Ethernet + IP + TCP header bytes (a hint)
    std::uint16_t gso_size = 0;     // MSS: payload bytes per segment
    std::uint16_t csum_start = 0;   // from the start of the frame
    std::uint16_t csum_offset = 0;  // from csum_start
    std::uint16_t num_buffers = 0;  // unused here (mergeable rx buffers)
};
static_assert(sizeof(VnetHdr) == 12);

/// Offloads an engine can take on send() and may hand out from receive().
struct Features {
    bool csum = false;  // frames may carry F_NEEDS_CSUM
    bool tso4 = false;  // GSO_TCPV4 frames up to 64 KiB
    bool tso6 = false;  // GSO_TCPV6 frames up to 64 KiB
};

/// Largest frame any engine produces or takes: a 64 KiB GSO frame plus Ethernet header.
inline constexpr std::size_t max_gso_frame_bytes = 65535 + 14;

/// One caller-owned receive buffer. `data` must hold max_frame_bytes(); on return `len` bytes
/// of frame and `hdr` are filled in.
struct RxBuffer {
    std::span<std::byte> data;
    VnetHdr hdr{};
    std::uint32_t len = 0;
};

class NetEngine {
public:
    virtual ~NetEngine() = default;

    /// Sends one frame (`frame` = the Ethernet frame, possibly scattered) with its offload header.
    /// Failure: nothing was queued. Errc::busy is backpressure: wait for notify_fd() or retry
    /// after the next receive(). Never blocks.
    virtual hv::Result<void> send(const VnetHdr& hdr, std::span<const iovec> frame) noexcept = 0;

    /// Fills up to out.size() buffers with received frames and returns how many; 0 means
    /// nothing now (wait on notify_fd()). Never blocks.
    virtual hv::Result<unsigned> receive(std::span<RxBuffer> out) noexcept = 0;

    /// Receives one frame scattered over `bufs` in order (its header into `hdr`): for a caller
    /// that reads straight into buffers it does not own contiguously (netback's rx path, into
    /// the frontend's mapped rx pages). Returns the frame's length, 0 when there is none. A
    /// frame longer than max_frame_bytes() is dropped, as by receive(). Errors: EOPNOTSUPP
    /// (this engine does not scatter: use receive()), Errc::buffer_too_small (bufs hold less
    /// than max_frame_bytes()). Never blocks.
    virtual hv::Result<std::size_t> receive_scattered(VnetHdr& hdr,
                                                      std::span<const iovec> bufs) noexcept {
        (void)hdr;
        (void)bufs;
        return hv::fail_errno(EOPNOTSUPP);
    }

    /// Readable (level-triggered) while receive() has frames.
    virtual int notify_fd() const noexcept = 0;

    virtual Features features() const noexcept = 0;

    /// Receive buffers must be at least this big.
    virtual std::size_t max_frame_bytes() const noexcept = 0;
};

/// Checks a virtio-net header against a frame of `frame_len` bytes and the engine's features:
/// F_NEEDS_CSUM needs features.csum and csum_start + csum_offset + 2 <= frame_len; a GSO type
/// needs the matching tso feature, F_NEEDS_CSUM, and gso_size > 0. Used by every engine.
namespace detail {
hv::Result<void> check_offload_slow(const VnetHdr& hdr, std::size_t frame_len,
                                    const Features& features) noexcept;
}
inline hv::Result<void> check_offload(const VnetHdr& hdr, std::size_t frame_len,
                                      const Features& features) noexcept {
    if ((hdr.flags & VnetHdr::F_NEEDS_CSUM) == 0 && hdr.gso_type == VnetHdr::GSO_NONE &&
        frame_len >= 14 && frame_len <= max_gso_frame_bytes) {
        return {};  // a plain frame of a possible length: nothing else to check
    }
    return detail::check_offload_slow(hdr, frame_len, features);
}

/// A loopback engine: every frame sent is received back, header included (benchmarks, tests).
/// Holds `capacity` frames (preallocated); send() on a full engine returns Errc::busy.
hv::Result<std::unique_ptr<NetEngine>> make_loop_engine(unsigned capacity = 64,
                                                        Features features = {true, true, true});

/// A sink engine: every frame sent is checked (check_offload), taken and dropped, as by a switch
/// port that discards; receive() never has one and notify_fd() is never readable. The
/// one-direction peer of DPDK's rxonly (hvbench pkt64_rings_tx*); never busy.
hv::Result<std::unique_ptr<NetEngine>> make_sink_engine(Features features = {true, true, true});

/// A tap engine over one queue fd of a Tap (tap.hpp), which must have been opened with
/// IFF_VNET_HDR and `features` set with TUNSETOFFLOAD. Takes ownership of the fd.
hv::Result<std::unique_ptr<NetEngine>> make_tap_engine(hv::UniqueFd queue_fd, Features features,
                                                       unsigned mtu = 1500);

}  // namespace hv::net

template <>
struct std::is_error_code_enum<hv::net::Errc> : std::true_type {};
