// hvctl console NAME|ID: attaches the terminal to a domain's console socket
// ($rundir/console/<domid>.sock, served by hv-min). Raw mode when stdin is a tty; Ctrl-]
// detaches (exit 0), as with xl; the domain's death ends it too (exit 0). Layer: tools.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>

#include "cli.hpp"
#include "hv/unique_fd.hpp"

namespace hv::tools {

namespace {

constexpr char kDetach = 0x1d;  // Ctrl-]

/// Puts a tty into raw mode and restores it on destruction.
class RawTty {
public:
    explicit RawTty(int fd) : fd_(fd) {
        if (::isatty(fd) && ::tcgetattr(fd, &saved_) == 0) {
            termios raw = saved_;
            ::cfmakeraw(&raw);
            active_ = ::tcsetattr(fd, TCSANOW, &raw) == 0;
        }
    }
    ~RawTty() {
        if (active_) {
            (void)::tcsetattr(fd_, TCSANOW, &saved_);
        }
    }
    RawTty(const RawTty&) = delete;
    RawTty& operator=(const RawTty&) = delete;

private:
    int fd_;
    termios saved_{};
    bool active_ = false;
};

}  // namespace

int attach_console(Cli& cli, std::uint16_t domid, const std::string& name) {
    Control* c = cli.control();
    if (c == nullptr) {
        return kExitFailure;
    }
    const std::string path = c->rundir() + "/console/" + std::to_string(domid) + ".sock";
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (!s || path.size() >= sizeof sa.sun_path) {
        cli.err << "hvctl console: " << name << ": bad console path " << path << "\n";
        return kExitFailure;
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        cli.err << "hvctl console: " << name << " (" << domid << "): no console at " << path
                << ": " << std::strerror(errno) << "\n";
        return kExitFailure;
    }
    RawTty tty(0);
    bool stdin_open = true;
    char buf[4096];
    for (;;) {
        pollfd p[2] = {{s.get(), POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return kExitFailure;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            const ssize_t n = ::read(s.get(), buf, sizeof buf);
            if (n <= 0) {
                return kExitOk;  // the domain is gone (or its console was disconnected)
            }
            cli.out.write(buf, n);
            cli.out.flush();
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            const ssize_t n = ::read(0, buf, sizeof buf);
            if (n <= 0) {
                stdin_open = false;  // keep showing output until detach or death
                continue;
            }
            const auto len = static_cast<std::size_t>(n);
            const char* stop = static_cast<const char*>(std::memchr(buf, kDetach, len));
            const std::size_t send_len = stop != nullptr ? static_cast<std::size_t>(stop - buf) : len;
            std::size_t off = 0;
            while (off < send_len) {
                const ssize_t w = ::send(s.get(), buf + off, send_len - off, MSG_NOSIGNAL);
                if (w <= 0) {
                    return kExitOk;
                }
                off += static_cast<std::size_t>(w);
            }
            if (stop != nullptr) {
                return kExitOk;
            }
        }
    }
}

int verb_console(Cli& cli, std::span<const std::string> args) {
    if (args.size() != 1) {
        return verb_usage(cli, "console", args.empty() ? "which domain?" : "too many arguments");
    }
    if (!args[0].empty() && args[0][0] == '-') {
        return verb_usage(cli, "console", "unknown option '" + args[0] + "'");
    }
    const auto dom = lookup_domain(cli, "console", args[0]);
    if (!dom) {
        return kExitFailure;
    }
    if (dom->domid == 0) {
        cli.err << "hvctl console: Domain-0 has no console here\n";
        return kExitFailure;
    }
    return attach_console(cli, dom->domid, dom->name);
}

}  // namespace hv::tools
