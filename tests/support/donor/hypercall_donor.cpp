// A domain program that hands its hypercall channel ($HV_HYPERCALL_FD) to the test process
// (SCM_RIGHTS, with one tag byte, over the Unix socket named by argv[1]) and then lives until
// that socket closes. The test attaches the channel in-process (hvmin::Services::attach_fd) and
// plays the frontend domain itself. Used by the blkback, netback and pciback end-to-end tests.
// Being the domain's process, it can also hold what the domain is meant to let go of: an fd
// the test sends it with tag 'K' is kept open, one with tag 'M' is mmapped (one page, read-only,
// shared) and closed (pciback's test of a guest that keeps a revoked BAR).
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "hv/fd_passing.hpp"

int main(int argc, char** argv) {
    const char* fd_env = std::getenv("HV_HYPERCALL_FD");
    if (argc != 2 || fd_env == nullptr) {
        std::fprintf(stderr, "usage: HV_HYPERCALL_FD=N hv_hypercall_donor SOCKET\n");
        return 2;
    }
    const int hfd = std::atoi(fd_env);
    const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    if (s < 0 || ::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        std::perror("connect");
        return 1;
    }
    const char tag = 'F';
    if (auto r = hv::send_fds(s, hv::bytes_of(tag), std::span<const int>(&hfd, 1)); !r || *r != 1) {
        std::fprintf(stderr, "hv_hypercall_donor: cannot pass the channel: %s\n",
                     r ? "short send" : r.error().message().c_str());
        return 1;
    }
    ::close(hfd);
    std::vector<hv::UniqueFd> kept;
    for (;;) {
        char buf[64];
        auto m = hv::recv_fds(s, std::as_writable_bytes(std::span(buf)), 4);
        if (!m || m->eof || m->bytes == 0) {
            return 0;
        }
        for (auto& fd : m->fds) {
            if (buf[0] == 'M') {
                (void)::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd.get(), 0);
            } else {
                kept.push_back(std::move(fd));
            }
        }
    }
}
