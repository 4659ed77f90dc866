// Rtnetlink requests built by hand (no libnl, no `ip`): one request, one ack, bounded wait.
#include "netlink.hpp"

#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine.hpp"
#include "hv/log.hpp"

namespace hv::net {
namespace {

constexpr int reply_timeout_ms = 5000;

std::size_t align4(std::size_t n) { return (n + 3) & ~std::size_t{3}; }

/// Appends netlink structures and attributes to a byte buffer, keeping 4-byte alignment.
class MsgBuilder {
public:
    MsgBuilder(std::vector<std::uint8_t>& buf, std::uint16_t type, std::uint16_t flags)
        : b_(buf) {
        b_.clear();
        nlmsghdr h{};
        h.nlmsg_type = type;
        h.nlmsg_flags = static_cast<std::uint16_t>(flags | NLM_F_REQUEST | NLM_F_ACK);
        put(&h, sizeof h);
    }
    void put(const void* p, std::size_t n) {
        const std::size_t at = b_.size();
        b_.resize(at + align4(n), 0);
        std::memcpy(b_.data() + at, p, n);
    }
    void attr(std::uint16_t type, const void* p, std::size_t n) {
        rtattr a{};
        a.rta_type = type;
        a.rta_len = static_cast<unsigned short>(RTA_LENGTH(n));
        put(&a, sizeof a);
        const std::size_t at = b_.size();
        b_.resize(at + align4(n), 0);
        if (n > 0) {
            std::memcpy(b_.data() + at, p, n);
        }
    }
    void attr_str(std::uint16_t type, std::string_view s) {
        std::string z(s);
        attr(type, z.c_str(), z.size() + 1);
    }
    void attr_u32(std::uint16_t type, std::uint32_t v) { attr(type, &v, sizeof v); }
    std::size_t begin_nest(std::uint16_t type) {
        const std::size_t at = b_.size();
        attr(type, nullptr, 0);
        return at;
    }
    void end_nest(std::size_t at) {
        rtattr a{};
        std::memcpy(&a, b_.data() + at, sizeof a);
        a.rta_len = static_cast<unsigned short>(b_.size() - at);
        std::memcpy(b_.data() + at, &a, sizeof a);
    }

private:
    std::vector<std::uint8_t>& b_;
};

bool valid_ifname(std::string_view n) { return !n.empty() && n.size() < IFNAMSIZ; }

/// Walks the rtattrs in [p, p+len) and calls fn(type, data, len) for each well-formed one.
template <class F>
void for_each_attr(const std::uint8_t* p, std::size_t len, F&& fn) {
    while (len >= sizeof(rtattr)) {
        rtattr a{};
        std::memcpy(&a, p, sizeof a);
        if (a.rta_len < sizeof a || a.rta_len > len) {
            return;
        }
        fn(static_cast<std::uint16_t>(a.rta_type & NLA_TYPE_MASK), p + RTA_LENGTH(0),
           a.rta_len - RTA_LENGTH(0));
        const std::size_t step = align4(a.rta_len);
        if (step >= len) {
            return;
        }
        p += step;
        len -= step;
    }
}

}  // namespace

bool LinkInfo::up() const noexcept { return (flags & IFF_UP) != 0; }

hv::Result<ScopedNetns> ScopedNetns::enter(int netns_fd) noexcept {
    if (netns_fd < 0) {
        return ScopedNetns(hv::UniqueFd{});
    }
    hv::UniqueFd saved(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!saved) {
        return hv::fail_errno();
    }
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
        return hv::fail_errno();
    }
    return ScopedNetns(std::move(saved));
}

ScopedNetns::~ScopedNetns() {
    if (saved_ && ::setns(saved_.get(), CLONE_NEWNET) != 0) {
        std::perror("ScopedNetns: cannot return to the original network namespace");
        std::abort();
    }
}

hv::Result<Netlink> Netlink::open(int netns_fd) noexcept {
    auto in = ScopedNetns::enter(netns_fd);
    if (!in) {
        return hv::fail(in.error());
    }
    // A socket keeps the namespace it was created in.
    hv::UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd) {
        return hv::fail_errno();
    }
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        return hv::fail_errno();
    }
    return Netlink(std::move(fd));
}

hv::Result<void> Netlink::transact(std::vector<std::uint8_t>& msg,
                                   std::vector<std::uint8_t>* reply) noexcept {
    const std::uint32_t seq = seq_++;
    nlmsghdr h{};
    std::memcpy(&h, msg.data(), sizeof h);
    h.nlmsg_len = static_cast<std::uint32_t>(msg.size());
    h.nlmsg_seq = seq;
    std::memcpy(msg.data(), &h, sizeof h);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(fd_.get(), msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                 sizeof kernel) < 0) {
        return hv::fail_errno();
    }
    std::vector<std::uint8_t> buf(64 * 1024);
    for (;;) {
        pollfd p{fd_.get(), POLLIN, 0};
        const int r = ::poll(&p, 1, reply_timeout_ms);
        if (r == 0) {
            return hv::fail(std::make_error_code(std::errc::timed_out));
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return hv::fail_errno();
        }
        const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return hv::fail_errno();
        }
        std::size_t left = static_cast<std::size_t>(n);
        const std::uint8_t* at = buf.data();
        while (left >= sizeof(nlmsghdr)) {
            nlmsghdr rh{};
            std::memcpy(&rh, at, sizeof rh);
            if (rh.nlmsg_len < sizeof rh || rh.nlmsg_len > left) {
                return hv::fail(Errc::protocol);
            }
            if (rh.nlmsg_seq == seq) {
                if (rh.nlmsg_type == NLMSG_ERROR) {
                    nlmsgerr e{};
                    if (rh.nlmsg_len < NLMSG_LENGTH(sizeof e)) {
                        return hv::fail(Errc::protocol);
                    }
                    std::memcpy(&e, at + NLMSG_HDRLEN, sizeof e);
                    if (e.error != 0) {
                        return hv::fail_errno(-e.error);
                    }
                    return {};
                }
                if (reply != nullptr && rh.nlmsg_type != NLMSG_DONE) {
                    reply->assign(at + NLMSG_HDRLEN, at + rh.nlmsg_len);
                }
            }
            const std::size_t step = NLMSG_ALIGN(rh.nlmsg_len);
            if (step >= left) {
                break;
            }
            at += step;
            left -= step;
        }
    }
}

hv::Result<LinkInfo> Netlink::get_link(std::string_view name) noexcept {
    if (!valid_ifname(name)) {
        return hv::fail_errno(EINVAL);
    }
    std::vector<std::uint8_t> msg;
    MsgBuilder b(msg, RTM_GETLINK, 0);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    b.put(&ifi, sizeof ifi);
    b.attr_str(IFLA_IFNAME, name);
    std::vector<std::uint8_t> reply;
    HV_TRY(transact(msg, &reply));
    if (reply.size() < NLMSG_ALIGN(sizeof(ifinfomsg))) {
        return hv::fail(Errc::protocol);
    }
    std::memcpy(&ifi, reply.data(), sizeof ifi);
    LinkInfo li;
    li.index = ifi.ifi_index;
    li.flags = ifi.ifi_flags;
    const std::size_t off = NLMSG_ALIGN(sizeof(ifinfomsg));
    for_each_attr(reply.data() + off, reply.size() - off,
                  [&](std::uint16_t type, const std::uint8_t* d, std::size_t len) {
                      switch (type) {
                          case IFLA_IFNAME:
                              li.name.assign(reinterpret_cast<const char*>(d),
                                             strnlen(reinterpret_cast<const char*>(d), len));
                              break;
                          case IFLA_MTU:
                              if (len >= 4) {
                                  std::memcpy(&li.mtu, d, 4);
                              }
                              break;
                          case IFLA_MASTER:
                              if (len >= 4) {
                                  std::memcpy(&li.master, d, 4);
                              }
                              break;
                          case IFLA_ADDRESS:
                              if (len == 6) {
                                  std::memcpy(li.mac.data(), d, 6);
                              }
                              break;
                          case IFLA_LINKINFO:
                              for_each_attr(d, len, [&](std::uint16_t t, const std::uint8_t* kd,
                                                        std::size_t kl) {
                                  if (t == IFLA_INFO_KIND) {
                                      li.kind.assign(reinterpret_cast<const char*>(kd),
                                                     strnlen(reinterpret_cast<const char*>(kd), kl));
                                  }
                              });
                              break;
                          default:
                              break;
                      }
                  });
    return li;
}

hv::Result<int> Netlink::link_index(std::string_view name) noexcept {
    auto li = get_link(name);
    if (!li) {
        return hv::fail(li.error());
    }
    return li->index;
}

hv::Result<void> Netlink::create_bridge(std::string_view name) noexcept {
    if (!valid_ifname(name)) {
        return hv::fail_errno(EINVAL);
    }
    std::vector<std::uint8_t> msg;
    MsgBuilder b(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    b.put(&ifi, sizeof ifi);
    b.attr_str(IFLA_IFNAME, name);
    const auto li = b.begin_nest(IFLA_LINKINFO);
    b.attr(IFLA_INFO_KIND, "bridge", 6);
    b.end_nest(li);
    return transact(msg);
}

hv::Result<void> Netlink::create_veth(std::string_view name, std::string_view peer) noexcept {
    if (!valid_ifname(name) || !valid_ifname(peer)) {
        return hv::fail_errno(EINVAL);
    }
    std::vector<std::uint8_t> msg;
    MsgBuilder b(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    b.put(&ifi, sizeof ifi);
    b.attr_str(IFLA_IFNAME, name);
    const auto li = b.begin_nest(IFLA_LINKINFO);
    b.attr(IFLA_INFO_KIND, "veth", 4);
    const auto data = b.begin_nest(IFLA_INFO_DATA);
    const auto p = b.begin_nest(VETH_INFO_PEER);
    b.put(&ifi, sizeof ifi);  // the peer's own ifinfomsg, then its attributes
    b.attr_str(IFLA_IFNAME, peer);
    b.end_nest(p);
    b.end_nest(data);
    b.end_nest(li);
    return transact(msg);
}

hv::Result<void> Netlink::delete_link(std::string_view name) noexcept {
    auto idx = link_index(name);
    if (!idx) {
        return hv::fail(idx.error());
    }
    std::vector<std::uint8_t> msg;
    MsgBuilder b(msg, RTM_DELLINK, 0);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = *idx;
    b.put(&ifi, sizeof ifi);
    return transact(msg);
}

hv::Result<void> Netlink::set_link(std::string_view link, std::uint16_t attr, const void* data,
                                   std::size_t len, unsigned flags, unsigned change) noexcept {
    auto idx = link_index(link);
    if (!idx) {
        return hv::fail(idx.error());
    }
    std::vector<std::uint8_t> msg;
    MsgBuilder b(msg, RTM_SETLINK, 0);
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = *idx;
    ifi.ifi_flags = flags;
    ifi.ifi_change = change;
    b.put(&ifi, sizeof ifi);
    if (attr != 0) {
        b.attr(attr, data, len);
    }
    return transact(msg);
}

hv::Result<void> Netlink::set_master(std::string_view link, std::string_view master) noexcept {
    std::uint32_t m = 0;
    if (!master.empty()) {
        auto idx = link_index(master);
        if (!idx) {
            return hv::fail(idx.error());
        }
        m = static_cast<std::uint32_t>(*idx);
    }
    return set_link(link, IFLA_MASTER, &m, sizeof m, 0, 0);
}

hv::Result<void> Netlink::set_up(std::string_view link, bool up) noexcept {
    return set_link(link, 0, nullptr, 0, up ? IFF_UP : 0, IFF_UP);
}

hv::Result<void> Netlink::set_mtu(std::string_view link, unsigned mtu) noexcept {
    const std::uint32_t v = mtu;
    return set_link(link, IFLA_MTU, &v, sizeof v, 0, 0);
}

hv::Result<void> Netlink::set_mac(std::string_view link, const Mac& mac) noexcept {
    return set_link(link, IFLA_ADDRESS, mac.data(), mac.size(), 0, 0);
}

hv::Result<void> Netlink::move_to_netns(std::string_view link, int netns_fd) noexcept {
    if (netns_fd < 0) {
        return hv::fail_errno(EBADF);
    }
    const std::uint32_t fd = static_cast<std::uint32_t>(netns_fd);
    return set_link(link, IFLA_NET_NS_FD, &fd, sizeof fd, 0, 0);
}

hv::Result<void> Netlink::add_address_v4(std::string_view link, in_addr addr,
                                         unsigned prefix_len) noexcept {
    if (prefix_len > 32) {
        return hv::fail_errno(EINVAL);
    }
    auto idx = link_index(link);
    if (!idx) {
        return hv::fail(idx.error());
    }
    std::vector<std::uint8_t> msg;
    MsgBuilder b(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    ifaddrmsg ifa{};
    ifa.ifa_family = AF_INET;
    ifa.ifa_prefixlen = static_cast<unsigned char>(prefix_len);
    ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    ifa.ifa_index = static_cast<unsigned>(*idx);
    b.put(&ifa, sizeof ifa);
    b.attr(IFA_LOCAL, &addr, sizeof addr);
    b.attr(IFA_ADDRESS, &addr, sizeof addr);
    return transact(msg);
}

hv::Result<Mac> parse_mac(std::string_view text) noexcept {
    Mac m{};
    if (text.size() != 17) {
        return hv::fail(Errc::protocol);
    }
    for (std::size_t i = 0; i < 6; ++i) {
        if (i > 0 && text[i * 3 - 1] != ':') {
            return hv::fail(Errc::protocol);
        }
        unsigned v = 0;
        for (std::size_t k = 0; k < 2; ++k) {
            const char c = text[i * 3 + k];
            v <<= 4;
            if (c >= '0' && c <= '9') {
                v |= static_cast<unsigned>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                v |= static_cast<unsigned>(c - 'a' + 10);
            } else if (c >= 'A' && c <= 'F') {
                v |= static_cast<unsigned>(c - 'A' + 10);
            } else {
                return hv::fail(Errc::protocol);
            }
        }
        m[i] = static_cast<std::uint8_t>(v);
    }
    return m;
}

std::string format_mac(const Mac& mac) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
                  mac[3], mac[4], mac[5]);
    return buf;
}

}  // namespace hv::net
