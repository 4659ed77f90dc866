// Passing file descriptors over a Unix socket (SCM_RIGHTS): one message with its fds out, one
// in. The one place hvkit builds and parses the control data (hv-min's transport, hv-guest's
// mount helper and the tests' channel donors use it). Layer: common. Any thread; no state.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv {

/// The most fds one message may carry (the kernel's SCM_MAX_FD).
inline constexpr std::size_t kMaxPassedFds = 253;

struct FdMessage {
    std::size_t bytes = 0;       ///< data bytes received (≤ the buffer; see data_truncated)
    std::vector<UniqueFd> fds;   ///< received fds, close-on-exec
    bool eof = false;            ///< no data and no fds: the peer closed (stream) or sent nothing
    bool data_truncated = false; ///< MSG_TRUNC: the datagram was larger than the buffer
    bool fds_truncated = false;  ///< MSG_CTRUNC: more fds were sent than max_fds (the rest are
                                 ///< closed by the kernel)
};

/// One sendmsg of `bytes` (at least one byte) with `fds` attached; MSG_NOSIGNAL | `flags`
/// (e.g. MSG_DONTWAIT); EINTR is retried. Returns the bytes sent (a stream socket may send
/// fewer; the fds go with the first byte). Errors: E2BIG for more than kMaxPassedFds fds,
/// EINVAL for no bytes, or sendmsg's errno (EAGAIN, EPIPE, EBADF for a closed fd, ...).
Result<std::size_t> send_fds(int sock, std::span<const std::byte> bytes, std::span<const int> fds,
                             int flags = 0) noexcept;

/// One recvmsg into `buf`, accepting up to `max_fds` (≤ kMaxPassedFds) fds, MSG_CMSG_CLOEXEC |
/// `flags`; EINTR is retried. Truncation is reported, not an error: the caller decides.
/// Errors: EINVAL for max_fds > kMaxPassedFds, or recvmsg's errno (EAGAIN, ...).
Result<FdMessage> recv_fds(int sock, std::span<std::byte> buf, std::size_t max_fds,
                           int flags = 0) noexcept;

/// The bytes of a trivially copyable object, for send_fds/recv_fds of one fixed-size value.
template <class T>
std::span<const std::byte> bytes_of(const T& v) noexcept {
    return std::as_bytes(std::span<const T, 1>(&v, 1));
}
template <class T>
std::span<std::byte> writable_bytes_of(T& v) noexcept {
    return std::as_writable_bytes(std::span<T, 1>(&v, 1));
}

}  // namespace hv
