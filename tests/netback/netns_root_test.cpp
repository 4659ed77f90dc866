// tests/support NetNs: private, visible to `ip netns`, gone (with its links) after the test.
#include <catch2/catch.hpp>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "netback/netlink.hpp"
#include "netns.hpp"
#include "skip.hpp"

namespace {

ino_t netns_inode(const char* path) {
    struct stat st {};
    return ::stat(path, &st) == 0 ? st.st_ino : 0;
}

/// A socket in `ns` subscribed to link notifications.
hv::UniqueFd link_monitor(const hv::test::NetNs& ns) {
    return ns.run([] {
        hv::UniqueFd s(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
        sockaddr_nl sa{};
        sa.nl_family = AF_NETLINK;
        sa.nl_groups = RTMGRP_LINK;
        if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            return hv::UniqueFd{};
        }
        return s;
    });
}

/// Waits (bounded) for an RTM_DELLINK on the monitor.
bool wait_dellink(int fd, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::vector<char> buf(16384);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        pollfd p{fd, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) {
            return false;
        }
        const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data());
             n > 0 && NLMSG_OK(h, static_cast<unsigned>(n)); h = NLMSG_NEXT(h, *const_cast<ssize_t*>(&n))) {
            if (h->nlmsg_type == RTM_DELLINK) {
                return true;
            }
        }
    }
}

}  // namespace

TEST_CASE("a test namespace is private, named for ip netns, and removed afterwards",
          "[netns][root]") {
    hv::test::require_root();
    std::string path;
    {
        auto ns = hv::test::NetNs::create();
        REQUIRE(ns.has_value());
        path = "/run/netns/" + ns->name();
        CHECK(std::filesystem::exists(path));
        const ino_t here = netns_inode("/proc/thread-self/ns/net");
        const ino_t there = ns->run([] { return netns_inode("/proc/thread-self/ns/net"); });
        CHECK(there != 0);
        CHECK(there != here);
        CHECK(netns_inode("/proc/thread-self/ns/net") == here);  // the caller never moved
        CHECK(there == netns_inode(path.c_str()));

        auto r = hv::run({"ip", "netns", "exec", ns->name(), "ip", "-o", "link", "show"}, 10000);
        REQUIRE(r.has_value());
        CHECK(r->exit_code == 0);
        CHECK(r->output.find("lo:") != std::string::npos);
        CHECK(r->output.find("UP") != std::string::npos);  // loopback is up
        CHECK(r->output.find("eth") == std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("links in a dropped namespace are deleted, also a veth peer elsewhere",
          "[netns][root]") {
    hv::test::require_root();
    auto keep = hv::test::NetNs::create();
    REQUIRE(keep.has_value());
    hv::UniqueFd mon = link_monitor(*keep);
    REQUIRE(mon.valid());
    {
        auto gone = hv::test::NetNs::create();
        REQUIRE(gone.has_value());
        auto nl = hv::net::Netlink::open(gone->fd());
        REQUIRE(nl.has_value());
        REQUIRE(nl->create_bridge("brx").has_value());
        REQUIRE(nl->create_veth("va", "vb").has_value());
        REQUIRE(nl->move_to_netns("vb", keep->fd()).has_value());
    }
    auto nlk = hv::net::Netlink::open(keep->fd());
    REQUIRE(nlk.has_value());
    // The kernel tears the namespace down asynchronously; its veth's death reaches us as a
    // DELLINK notification (the moved-in vb produced a NEWLINK first, which we skip).
    REQUIRE(wait_dellink(mon.get(), 10000));
    auto li = nlk->get_link("vb");
    REQUIRE_FALSE(li.has_value());
    CHECK(li.error() == std::errc::no_such_device);
}

TEST_CASE("a command in a namespace that overstays its timeout is killed", "[netns][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    const auto t0 = std::chrono::steady_clock::now();
    auto r = ns->exec({"sleep", "30"}, 200);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == std::errc::timed_out);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    auto missing = ns->exec({"/nonexistent/hvkit-tool"}, 1000);
    REQUIRE(missing.has_value());
    CHECK(missing->exit_code == 127);
}

TEST_CASE("an exception inside a namespace thread reaches the caller", "[netns][root]") {
    hv::test::require_root();
    auto ns = hv::test::NetNs::create();
    REQUIRE(ns.has_value());
    CHECK_THROWS_AS(ns->run([]() -> int { throw std::runtime_error("inside"); }),
                    std::runtime_error);
    CHECK_THROWS_AS(ns->run([] { throw std::logic_error("inside"); }), std::logic_error);
    CHECK(ns->run([] { return 5; }) == 5);
}

TEST_CASE("a namespace left behind by a crashed test process is swept on the next create",
          "[netns][root]") {
    hv::test::require_root();
    // A pid that is certainly dead: a child we started and reaped.
    auto child = hv::Subprocess::spawn({"true"});
    REQUIRE(child.has_value());
    const pid_t pid = child->pid();
    REQUIRE(child->wait(5000).has_value());
    const std::string stale = "hvtsweep-" + std::to_string(pid) + "-0";
    auto added = hv::run({"ip", "netns", "add", stale}, 10000);
    REQUIRE(added.has_value());
    REQUIRE(added->exit_code == 0);
    REQUIRE(std::filesystem::exists("/run/netns/" + stale));
    const std::string alive = "hvtsweep-" + std::to_string(::getpid()) + "-99";
    REQUIRE(hv::run({"ip", "netns", "add", alive}, 10000)->exit_code == 0);
    {
        auto ns = hv::test::NetNs::create("hvtsweep");
        REQUIRE(ns.has_value());
        CHECK_FALSE(std::filesystem::exists("/run/netns/" + stale));
        CHECK(std::filesystem::exists("/run/netns/" + alive));  // our own pid: not stale
    }
    REQUIRE(hv::run({"ip", "netns", "del", alive}, 10000)->exit_code == 0);
}
