// The test side of hv_hypercall_donor.
#include "donor_channel.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstdio>

#include "hv/fd_passing.hpp"

namespace hv::test {

UniqueFd listen_for_donor(const std::string& path) {
    UniqueFd listen(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listen.valid());
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof sa.sun_path);
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    REQUIRE(::bind(listen.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(listen.get(), 1) == 0);
    return listen;
}

UniqueFd receive_donated_channel(int listen_fd, UniqueFd& donor) {
    pollfd p{listen_fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    donor = UniqueFd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    REQUIRE(donor.valid());
    p = pollfd{donor.get(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    char tag = 0;
    auto m = recv_fds(donor.get(), writable_bytes_of(tag), 1);
    REQUIRE(m);
    REQUIRE(m->bytes == 1);
    REQUIRE(m->fds.size() == 1);
    return std::move(m->fds[0]);
}

}  // namespace hv::test
