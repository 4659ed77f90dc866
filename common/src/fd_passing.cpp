// SCM_RIGHTS send and receive. Layer: common.
#include "hv/fd_passing.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace hv {

namespace {
constexpr std::size_t kCtrlBytes = CMSG_SPACE(sizeof(int) * kMaxPassedFds);
}

Result<std::size_t> send_fds(int sock, std::span<const std::byte> bytes, std::span<const int> fds,
                             int flags) noexcept {
    if (fds.size() > kMaxPassedFds) {
        return fail_errno(E2BIG);
    }
    if (bytes.empty()) {
        return fail_errno(EINVAL);  // a zero-length message with fds reads as EOF on a stream
    }
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[kCtrlBytes];
    if (!fds.empty()) {
        std::memset(ctrl, 0, CMSG_SPACE(sizeof(int) * fds.size()));
        mh.msg_control = ctrl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        const ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
        if (n >= 0) {
            return static_cast<std::size_t>(n);
        }
        if (errno != EINTR) {
            return fail_errno();
        }
    }
}

Result<FdMessage> recv_fds(int sock, std::span<std::byte> buf, std::size_t max_fds,
                           int flags) noexcept {
    if (max_fds > kMaxPassedFds) {
        return fail_errno(EINVAL);
    }
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[kCtrlBytes];
    if (max_fds > 0) {
        mh.msg_control = ctrl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
    }
    ssize_t n;
    do {
        n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return fail_errno();
    }
    FdMessage m;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) {
            continue;
        }
        const std::size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < nfds; ++i) {
            int f;
            std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
            m.fds.emplace_back(f);
        }
    }
    m.bytes = static_cast<std::size_t>(n);
    m.data_truncated = (mh.msg_flags & MSG_TRUNC) != 0;
    m.fds_truncated = (mh.msg_flags & MSG_CTRUNC) != 0;
    m.eof = n == 0 && m.fds.empty() && !m.fds_truncated;
    return m;
}

}  // namespace hv
