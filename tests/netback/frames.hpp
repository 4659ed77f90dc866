// Test helpers for root netback tests: build and parse Ethernet/ARP/IPv4/ICMP/TCP frames, a
// "guest" that drives a NetEngine (answering ARP for its address while it waits), and ethtool.
#pragma once

#include <netinet/in.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "netback/engine.hpp"
#include "netback/netlink.hpp"

namespace hv::test::net {

using hv::net::Mac;
using Bytes = std::vector<std::uint8_t>;

in_addr ip4(const char* dotted);
std::uint16_t inet_checksum(std::span<const std::uint8_t> data, std::uint32_t sum = 0);

Bytes arp_request(const Mac& src, in_addr sip, in_addr tip);
Bytes arp_reply(const Mac& src, in_addr sip, const Mac& dst, in_addr dip);
Bytes icmp_echo(const Mac& src, const Mac& dst, in_addr s, in_addr d, std::uint16_t id,
                std::uint16_t seq, std::size_t payload_len);

namespace tcpf {
constexpr std::uint8_t FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10;
}
struct TcpSpec {
    Mac src{}, dst{};
    in_addr s{}, d{};
    std::uint16_t sport = 0, dport = 0;
    std::uint32_t seq = 0, ack = 0;
    std::uint8_t flags = 0;
    std::uint16_t window = 65535;
    std::uint16_t mss_option = 0;  // adds an MSS option when non-zero
};
/// partial_csum: the TCP checksum field holds the folded pseudo-header sum (what a virtio-net
/// F_NEEDS_CSUM frame carries); otherwise the full checksum.
Bytes tcp_frame(const TcpSpec& t, std::span<const std::uint8_t> payload, bool partial_csum);

/// A frame of one flow, for the rx hash (netback/hash.hpp): untagged or VLAN-tagged Ethernet,
/// IPv4 or IPv6 (addresses as 4 / 16 bytes; `ext` 8-byte extension headers, hop-by-hop first
/// then destination options), `proto` (TCP 6, UDP 17...) with the ports as the transport
/// header's first 4 bytes, optionally a fragment (IPv4 MF; IPv6 a fragment header with MF),
/// `payload` bytes after a 20-byte transport header. Checksums are not filled.
/// The Microsoft RSS verification suite's Toeplitz key.
inline constexpr std::array<std::uint8_t, 40> kRssKey = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

struct FlowSpec {
    bool ipv6 = false;
    bool vlan = false;
    bool fragment = false;
    unsigned ext = 0;
    std::uint8_t proto = 6;
    std::array<std::uint8_t, 16> src{}, dst{};
    std::uint16_t sport = 0, dport = 0;
    std::size_t payload = 0;
};
Bytes flow_frame(const FlowSpec& f);
/// What Linux netback hashes for `f` with every type enabled: addresses, then ports for an
/// unfragmented TCP packet.
Bytes flow_tuple(const FlowSpec& f);

struct Parsed {
    Mac src{}, dst{};
    std::uint16_t ethertype = 0;
    // ARP
    std::uint16_t arp_op = 0;
    in_addr arp_sip{}, arp_tip{};
    // IPv4
    std::uint8_t proto = 0;
    in_addr ip_src{}, ip_dst{};
    bool ip_csum_ok = false;
    // ICMP / TCP
    std::uint8_t icmp_type = 0;
    std::uint16_t icmp_id = 0, icmp_seq = 0;
    bool l4_csum_ok = false;
    std::uint16_t sport = 0, dport = 0;
    std::uint32_t seq = 0, ack = 0;
    std::uint8_t tcp_flags = 0;
    std::uint16_t window = 0, mss = 0;
    std::size_t payload_off = 0, payload_len = 0;
};
std::optional<Parsed> parse(std::span<const std::uint8_t> frame);

/// A guest endpoint on an engine (tap): sends frames, and while waiting answers ARP requests for
/// its own address so the far side can reach it.
class Guest {
public:
    Guest(hv::net::NetEngine& e, Mac mac, in_addr ip) : e_(e), mac_(mac), ip_(ip) {
        buf_.resize(e.max_frame_bytes());
    }
    const Mac& mac() const { return mac_; }
    in_addr ip() const { return ip_; }
    void send(const Bytes& frame, const hv::net::VnetHdr& hdr = {});
    /// Waits (bounded) for a frame for which pred() holds; returns it.
    std::optional<Bytes> wait_for(const std::function<bool(const Parsed&)>& pred,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(5));
    /// ARP for `ip` and return its MAC.
    std::optional<Mac> resolve(in_addr ip);

private:
    hv::net::NetEngine& e_;
    Mac mac_;
    in_addr ip_;
    std::vector<std::byte> buf_;
};

/// ethtool (SIOCETHTOOL) on a link in the calling thread's namespace: legacy offload toggles.
bool ethtool_set(const std::string& link, std::uint32_t cmd, bool on);

}  // namespace hv::test::net
