// A domain program that passes its hypercall channel ($HV_HYPERCALL_FD) to the test process
// over the Unix socket argv[1] (SCM_RIGHTS), then lives until that socket closes. The test
// attaches the channel in-process and plays the netfront domain itself.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    const char* env = std::getenv("HV_HYPERCALL_FD");
    if (argc != 2 || env == nullptr) {
        std::fprintf(stderr, "usage: HV_HYPERCALL_FD=N netback_e2e_donor SOCKET\n");
        return 2;
    }
    const int chan = std::atoi(env);
    const int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
    if (s < 0 || ::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return 1;
    }
    char tag = 'N';
    iovec iov{&tag, 1};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &chan, sizeof chan);
    if (::sendmsg(s, &m, MSG_NOSIGNAL) != 1) {
        return 1;
    }
    ::close(chan);
    char buf[16];
    while (::read(s, buf, sizeof buf) > 0) {
    }
    return 0;
}
