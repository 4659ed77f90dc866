// SOCK_SEQPACKET datagrams with SCM_RIGHTS (hv::send_fds / recv_fds). Layer: hv-min (L1).
#include "transport.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "hv/fd_passing.hpp"
#include "hvmin/wire.hpp"

namespace hv::hvmin::transport {

Result<Received> receive(int fd) noexcept {
    thread_local std::vector<std::byte> buf(wire::kMaxMessage + 1);
    auto m = recv_fds(fd, buf, wire::kMaxFds, MSG_DONTWAIT);
    if (!m) {
        return fail(m.error());
    }
    Received r;
    r.fds = std::move(m->fds);
    if (m->eof) {
        // A zero-length datagram is not EOF on SEQPACKET only if the peer is still there;
        // recv returns 0 for both. Treat it as EOF: hv-min's requests are never empty.
        r.eof = true;
        return r;
    }
    r.truncated = m->data_truncated || m->fds_truncated || m->bytes > wire::kMaxMessage;
    r.bytes.assign(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(std::min(m->bytes, buf.size())));
    return r;
}

Result<void> send_raw_fds(int fd, std::span<const std::byte> bytes, std::span<const int> fds) noexcept {
    if (fds.size() > wire::kMaxFds) {
        return fail_errno(E2BIG);
    }
    auto n = send_fds(fd, bytes, fds, MSG_DONTWAIT);
    if (!n) {
        return fail(n.error());
    }
    return {};
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
