// A domain program that hands its hypercall channel to the test process (SCM_RIGHTS over the
// Unix socket named by argv[1]) and then lives until that socket closes. The test attaches
// the channel in-process (hvmin::Services::attach_fd) and plays the frontend domain itself.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char** argv) {
    const char* fd_env = std::getenv("HV_HYPERCALL_FD");
    if (argc != 2 || fd_env == nullptr) {
        std::fprintf(stderr, "usage: HV_HYPERCALL_FD=N blkback_e2e_donor SOCKET\n");
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
    char byte = 'F';
    iovec iov{&byte, 1};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &hfd, sizeof hfd);
    if (::sendmsg(s, &msg, MSG_NOSIGNAL) != 1) {
        std::perror("sendmsg");
        return 1;
    }
    ::close(hfd);
    char buf[64];
    while (::read(s, buf, sizeof buf) > 0) {
    }
    return 0;
}
