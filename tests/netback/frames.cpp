// Frame builders/parsers and the Guest helper for the root tests.
#include "frames.hpp"

#include <arpa/inet.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstring>
#include <stdexcept>

#include "hv/unique_fd.hpp"

namespace hv::test::net {
namespace {

void put16(Bytes& b, std::size_t at, std::uint16_t v) {
    b[at] = static_cast<std::uint8_t>(v >> 8);
    b[at + 1] = static_cast<std::uint8_t>(v);
}
void put32(Bytes& b, std::size_t at, std::uint32_t v) {
    put16(b, at, static_cast<std::uint16_t>(v >> 16));
    put16(b, at + 2, static_cast<std::uint16_t>(v));
}
std::uint16_t get16(std::span<const std::uint8_t> b, std::size_t at) {
    return static_cast<std::uint16_t>(b[at] << 8 | b[at + 1]);
}
std::uint32_t get32(std::span<const std::uint8_t> b, std::size_t at) {
    return static_cast<std::uint32_t>(get16(b, at)) << 16 | get16(b, at + 2);
}

std::uint32_t sum16(std::span<const std::uint8_t> d, std::uint32_t sum) {
    std::size_t i = 0;
    for (; i + 1 < d.size(); i += 2) {
        sum += static_cast<std::uint32_t>(d[i] << 8 | d[i + 1]);
    }
    if (i < d.size()) {
        sum += static_cast<std::uint32_t>(d[i] << 8);
    }
    return sum;
}
std::uint16_t fold(std::uint32_t sum) {
    while ((sum >> 16) != 0) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return static_cast<std::uint16_t>(sum);
}
std::uint32_t pseudo_sum(in_addr s, in_addr d, std::uint8_t proto, std::size_t len) {
    std::uint8_t ph[12];
    std::memcpy(ph, &s, 4);
    std::memcpy(ph + 4, &d, 4);
    ph[8] = 0;
    ph[9] = proto;
    ph[10] = static_cast<std::uint8_t>(len >> 8);
    ph[11] = static_cast<std::uint8_t>(len);
    return sum16({ph, 12}, 0);
}

void eth(Bytes& b, const Mac& dst, const Mac& src, std::uint16_t type) {
    std::memcpy(b.data(), dst.data(), 6);
    std::memcpy(b.data() + 6, src.data(), 6);
    put16(b, 12, type);
}

void ipv4(Bytes& b, std::size_t at, in_addr s, in_addr d, std::uint8_t proto, std::size_t len) {
    b[at] = 0x45;
    b[at + 1] = 0;
    put16(b, at + 2, static_cast<std::uint16_t>(len));
    put16(b, at + 4, 0x1234);
    put16(b, at + 6, 0x4000);  // DF
    b[at + 8] = 64;
    b[at + 9] = proto;
    std::memcpy(b.data() + at + 12, &s, 4);
    std::memcpy(b.data() + at + 16, &d, 4);
    put16(b, at + 10, static_cast<std::uint16_t>(~fold(sum16({b.data() + at, 20}, 0))));
}

}  // namespace

in_addr ip4(const char* dotted) {
    in_addr a{};
    ::inet_pton(AF_INET, dotted, &a);
    return a;
}

std::uint16_t inet_checksum(std::span<const std::uint8_t> data, std::uint32_t sum) {
    return static_cast<std::uint16_t>(~fold(sum16(data, sum)));
}

static Bytes arp(std::uint16_t op, const Mac& src, in_addr sip, const Mac& tha, in_addr tip,
                 const Mac& eth_dst) {
    Bytes b(42, 0);
    eth(b, eth_dst, src, 0x0806);
    put16(b, 14, 1);       // Ethernet
    put16(b, 16, 0x0800);  // IPv4
    b[18] = 6;
    b[19] = 4;
    put16(b, 20, op);
    std::memcpy(b.data() + 22, src.data(), 6);
    std::memcpy(b.data() + 28, &sip, 4);
    std::memcpy(b.data() + 32, tha.data(), 6);
    std::memcpy(b.data() + 38, &tip, 4);
    return b;
}

Bytes arp_request(const Mac& src, in_addr sip, in_addr tip) {
    return arp(1, src, sip, Mac{}, tip, Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
}

Bytes arp_reply(const Mac& src, in_addr sip, const Mac& dst, in_addr dip) {
    return arp(2, src, sip, dst, dip, dst);
}

Bytes icmp_echo(const Mac& src, const Mac& dst, in_addr s, in_addr d, std::uint16_t id,
                std::uint16_t seq, std::size_t payload_len) {
    Bytes b(14 + 20 + 8 + payload_len, 0);
    eth(b, dst, src, 0x0800);
    ipv4(b, 14, s, d, IPPROTO_ICMP, 20 + 8 + payload_len);
    const std::size_t at = 34;
    b[at] = 8;  // echo request
    put16(b, at + 4, id);
    put16(b, at + 6, seq);
    for (std::size_t i = 0; i < payload_len; ++i) {
        b[at + 8 + i] = static_cast<std::uint8_t>(i * 7 + 1);
    }
    put16(b, at + 2, inet_checksum({b.data() + at, 8 + payload_len}));
    return b;
}

Bytes tcp_frame(const TcpSpec& t, std::span<const std::uint8_t> payload, bool partial_csum) {
    const std::size_t opt = t.mss_option != 0 ? 4 : 0;
    const std::size_t thl = 20 + opt;
    Bytes b(14 + 20 + thl + payload.size(), 0);
    eth(b, t.dst, t.src, 0x0800);
    ipv4(b, 14, t.s, t.d, IPPROTO_TCP, 20 + thl + payload.size());
    const std::size_t at = 34;
    put16(b, at, t.sport);
    put16(b, at + 2, t.dport);
    put32(b, at + 4, t.seq);
    put32(b, at + 8, t.ack);
    b[at + 12] = static_cast<std::uint8_t>((thl / 4) << 4);
    b[at + 13] = t.flags;
    put16(b, at + 14, t.window);
    if (opt != 0) {
        b[at + 20] = 2;
        b[at + 21] = 4;
        put16(b, at + 22, t.mss_option);
    }
    if (!payload.empty()) {
        std::memcpy(b.data() + at + thl, payload.data(), payload.size());
    }
    const std::size_t l4 = thl + payload.size();
    const std::uint32_t ps = pseudo_sum(t.s, t.d, IPPROTO_TCP, l4);
    if (partial_csum) {
        put16(b, at + 16, fold(ps));
    } else {
        put16(b, at + 16, inet_checksum({b.data() + at, l4}, ps));
    }
    return b;
}

std::optional<Parsed> parse(std::span<const std::uint8_t> f) {
    if (f.size() < 14) {
        return std::nullopt;
    }
    Parsed p;
    std::memcpy(p.dst.data(), f.data(), 6);
    std::memcpy(p.src.data(), f.data() + 6, 6);
    p.ethertype = get16(f, 12);
    if (p.ethertype == 0x0806) {
        if (f.size() < 42) {
            return std::nullopt;
        }
        p.arp_op = get16(f, 20);
        std::memcpy(&p.arp_sip, f.data() + 28, 4);
        std::memcpy(&p.arp_tip, f.data() + 38, 4);
        return p;
    }
    if (p.ethertype != 0x0800 || f.size() < 34 || (f[14] >> 4) != 4) {
        return p;
    }
    const std::size_t ihl = static_cast<std::size_t>(f[14] & 0xf) * 4;
    const std::size_t tot = get16(f, 16);
    if (ihl < 20 || tot < ihl || 14 + tot > f.size()) {
        return std::nullopt;
    }
    p.ip_csum_ok = inet_checksum(f.subspan(14, ihl)) == 0;
    p.proto = f[23];
    std::memcpy(&p.ip_src, f.data() + 26, 4);
    std::memcpy(&p.ip_dst, f.data() + 30, 4);
    const std::size_t at = 14 + ihl;
    const std::size_t l4 = tot - ihl;
    const auto seg = f.subspan(at, l4);
    if (p.proto == IPPROTO_ICMP && l4 >= 8) {
        p.icmp_type = f[at];
        p.icmp_id = get16(f, at + 4);
        p.icmp_seq = get16(f, at + 6);
        p.l4_csum_ok = inet_checksum(seg) == 0;
        p.payload_off = at + 8;
        p.payload_len = l4 - 8;
    } else if (p.proto == IPPROTO_TCP && l4 >= 20) {
        p.sport = get16(f, at);
        p.dport = get16(f, at + 2);
        p.seq = get32(f, at + 4);
        p.ack = get32(f, at + 8);
        const std::size_t thl = static_cast<std::size_t>(f[at + 12] >> 4) * 4;
        p.tcp_flags = f[at + 13];
        p.window = get16(f, at + 14);
        p.l4_csum_ok = inet_checksum(seg, pseudo_sum(p.ip_src, p.ip_dst, IPPROTO_TCP, l4)) == 0;
        for (std::size_t o = at + 20; o + 1 < at + thl && o + 1 < f.size();) {
            if (f[o] == 0) {
                break;
            }
            if (f[o] == 1) {
                ++o;
                continue;
            }
            if (f[o] == 2 && f[o + 1] == 4 && o + 3 < f.size()) {
                p.mss = get16(f, o + 2);
            }
            if (f[o + 1] < 2) {
                break;
            }
            o += f[o + 1];
        }
        p.payload_off = at + thl;
        p.payload_len = thl <= l4 ? l4 - thl : 0;
    }
    return p;
}

void Guest::send(const Bytes& frame, const hv::net::VnetHdr& hdr) {
    const iovec iov{const_cast<std::uint8_t*>(frame.data()), frame.size()};
    auto r = e_.send(hdr, {&iov, 1});
    if (!r) {
        throw std::runtime_error("guest send: " + r.error().message());
    }
}

std::optional<Bytes> Guest::wait_for(const std::function<bool(const Parsed&)>& pred,
                                     std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        hv::net::RxBuffer rx{buf_};
        auto n = e_.receive({&rx, 1});
        if (!n) {
            throw std::runtime_error("guest receive: " + n.error().message());
        }
        if (*n == 1) {
            const std::span<const std::uint8_t> f(reinterpret_cast<const std::uint8_t*>(buf_.data()),
                                                  rx.len);
            auto p = parse(f);
            if (p && p->ethertype == 0x0806 && p->arp_op == 1 &&
                p->arp_tip.s_addr == ip_.s_addr) {
                send(arp_reply(mac_, ip_, p->src, p->arp_sip));
            }
            if (p && pred(*p)) {
                return Bytes(f.begin(), f.end());
            }
            continue;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return std::nullopt;
        }
        pollfd pfd{e_.notify_fd(), POLLIN, 0};
        ::poll(&pfd, 1, static_cast<int>(left.count()));
    }
}

std::optional<Mac> Guest::resolve(in_addr ip) {
    // Like a real stack, retransmit: a switch port only forwards once the kernel's link watch
    // has seen its carrier, which can lag the moment the link was set up.
    for (int attempt = 0; attempt < 20; ++attempt) {
        send(arp_request(mac_, ip_, ip));
        auto f = wait_for(
            [&](const Parsed& p) {
                return p.ethertype == 0x0806 && p.arp_op == 2 && p.arp_sip.s_addr == ip.s_addr;
            },
            std::chrono::milliseconds(250));
        if (f) {
            return parse(*f)->src;
        }
    }
    return std::nullopt;
}

bool ethtool_set(const std::string& link, std::uint32_t cmd, bool on) {
    hv::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ethtool_value v{};
    v.cmd = cmd;
    v.data = on ? 1 : 0;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, link.c_str(), IFNAMSIZ - 1);
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    return s && ::ioctl(s.get(), SIOCETHTOOL, &ifr) == 0;
}

}  // namespace hv::test::net

namespace hv::test::net {

Bytes flow_frame(const FlowSpec& f) {
    const std::size_t l2 = f.vlan ? 18 : 14;
    const std::size_t l3 = f.ipv6 ? 40 + 8 * f.ext + (f.fragment ? 8 : 0) : 20;
    Bytes b(l2 + l3 + 20 + f.payload, 0);
    const Mac dst{0x02, 0, 0, 0, 0, 0x02}, src{0x02, 0, 0, 0, 0, 0x01};
    eth(b, dst, src, f.vlan ? 0x8100 : (f.ipv6 ? 0x86dd : 0x0800));
    if (f.vlan) {
        put16(b, 14, 5);  // VID 5
        put16(b, 16, f.ipv6 ? 0x86dd : 0x0800);
    }
    const std::size_t ip = l2;
    if (f.ipv6) {
        b[ip] = 0x60;
        put16(b, ip + 4, static_cast<std::uint16_t>(l3 - 40 + 20 + f.payload));
        b[ip + 7] = 64;
        std::memcpy(&b[ip + 8], f.src.data(), 16);
        std::memcpy(&b[ip + 24], f.dst.data(), 16);
        // The chain: each header's first byte names the next one.
        std::size_t at = ip + 6;
        for (unsigned e = 0; e < f.ext; ++e) {
            b[at] = e == 0 ? 0 : 60;  // hop-by-hop, then destination options
            at = ip + 40 + 8 * e;     // its length byte stays 0: 8 bytes
        }
        if (f.fragment) {
            b[at] = 44;
            at = ip + 40 + 8 * f.ext;
            put16(b, at + 2, 1);  // offset 0, MF
        }
        b[at] = f.proto;
    } else {
        in_addr s{}, d{};
        std::memcpy(&s, f.src.data(), 4);
        std::memcpy(&d, f.dst.data(), 4);
        ipv4(b, ip, s, d, f.proto, 20 + 20 + f.payload);
        if (f.fragment) {
            put16(b, ip + 6, 0x2000);  // MF
        }
    }
    put16(b, l2 + l3, f.sport);
    put16(b, l2 + l3 + 2, f.dport);
    for (std::size_t i = 0; i < f.payload; ++i) {
        b[l2 + l3 + 20 + i] = static_cast<std::uint8_t>(i * 7 + 1);
    }
    return b;
}

Bytes flow_tuple(const FlowSpec& f) {
    const std::size_t a = f.ipv6 ? 16 : 4;
    Bytes t(f.src.begin(), f.src.begin() + static_cast<std::ptrdiff_t>(a));
    t.insert(t.end(), f.dst.begin(), f.dst.begin() + static_cast<std::ptrdiff_t>(a));
    if (f.proto == 6 && !f.fragment) {
        for (std::uint16_t p : {f.sport, f.dport}) {
            t.push_back(static_cast<std::uint8_t>(p >> 8));
            t.push_back(static_cast<std::uint8_t>(p));
        }
    }
    return t;
}

}  // namespace hv::test::net
