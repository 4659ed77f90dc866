// One datagram in, one datagram out, with SCM_RIGHTS fds, on a SOCK_SEQPACKET socket.
// Layer: hv-min (L1), internal to hv-min's libraries. Any thread; no state.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::hvmin::transport {

struct Received {
    std::vector<std::byte> bytes;
    std::vector<UniqueFd> fds;
    bool eof = false;        ///< the peer closed
    bool truncated = false;  ///< datagram larger than kMaxMessage or fds cut (MSG_TRUNC/CTRUNC)
};

/// Nonblocking receive of one datagram. EAGAIN when none is queued.
Result<Received> receive(int fd) noexcept;
/// Nonblocking send (MSG_DONTWAIT|MSG_NOSIGNAL) of one datagram with fds. EAGAIN when full.
Result<void> send(int fd, std::span<const std::byte> bytes, std::span<const UniqueFd> fds) noexcept;
Result<void> send_raw_fds(int fd, std::span<const std::byte> bytes, std::span<const int> fds) noexcept;

/// A blocking SOCK_SEQPACKET connection to $rundir/hv-min.sock.
Result<UniqueFd> connect_control(const std::filesystem::path& rundir) noexcept;

}  // namespace hv::hvmin::transport
