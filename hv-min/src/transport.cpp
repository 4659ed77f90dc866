// SOCK_SEQPACKET datagrams with SCM_RIGHTS. Layer: hv-min (L1).
#include "transport.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "hvmin/wire.hpp"

namespace hv::hvmin::transport {

Result<Received> receive(int fd) noexcept {
    Received r;
    thread_local std::vector<std::byte> buf(wire::kMaxMessage + 1);
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * wire::kMaxFds)];
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    const ssize_t n = ::recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        return fail_errno();
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const std::size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < nfds; ++i) {
                int f;
                std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                r.fds.emplace_back(f);
            }
        }
    }
    if (n == 0 && r.fds.empty()) {
        // A zero-length datagram is not EOF on SEQPACKET only if the peer is still there;
        // recv returns 0 for both. Treat it as EOF: hv-min's requests are never empty.
        r.eof = true;
        return r;
    }
    r.truncated = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 ||
                  static_cast<std::size_t>(n) > wire::kMaxMessage;
    r.bytes.assign(buf.begin(), buf.begin() + std::min<ssize_t>(n, static_cast<ssize_t>(buf.size())));
    return r;
}

Result<void> send_raw_fds(int fd, std::span<const std::byte> bytes, std::span<const int> fds) noexcept {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * wire::kMaxFds)];
    if (!fds.empty()) {
        if (fds.size() > wire::kMaxFds) {
            return fail_errno(E2BIG);
        }
        mh.msg_control = ctrl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        const ssize_t n = ::sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0) {
            return {};
        }
        if (errno != EINTR) {
            return fail_errno();
        }
    }
}

Result<void> send(int fd, std::span<const std::byte> bytes, std::span<const UniqueFd> fds) noexcept {
    int raw[wire::kMaxFds];
    if (fds.size() > wire::kMaxFds) {
        return fail_errno(E2BIG);
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
        raw[i] = fds[i].get();
    }
    return send_raw_fds(fd, bytes, std::span<const int>(raw, fds.size()));
}

Result<UniqueFd> connect_control(const std::filesystem::path& rundir) noexcept {
    UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!fd) {
        return fail_errno();
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    const std::string p = (rundir / "hv-min.sock").string();
    if (p.size() >= sizeof sa.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(sa.sun_path, p.c_str(), p.size() + 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return fail_errno();
    }
    return fd;
}

}  // namespace hv::hvmin::transport
