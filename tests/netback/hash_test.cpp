// The rx flow hash (netback/hash.hpp; Linux netback hash.c xenvif_set_skb_hash,
// xenvif_select_queue): which bytes are hashed for which enabled type, the value against the
// Toeplitz hash of the tuple (and one RSS verification vector), frames that get no hash, and
// the queue the mapping names.
#include "netback/hash.hpp"

#include <arpa/inet.h>

#include <catch2/catch.hpp>

#include "frames.hpp"

namespace hv::net {
namespace {

namespace w = hv::rings;
using hv::test::net::Bytes;
using hv::test::net::flow_frame;
using hv::test::net::flow_tuple;
using hv::test::net::FlowSpec;
using hv::test::net::kRssKey;

HashSettings toeplitz(std::uint32_t flags) {
    HashSettings s;
    s.algorithm = w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
    s.flags = flags;
    std::copy(kRssKey.begin(), kRssKey.end(), s.key.begin());
    return s;
}

FlowSpec v4(const char* src, const char* dst, std::uint16_t sport, std::uint16_t dport,
            std::uint8_t proto = 6) {
    FlowSpec f;
    f.proto = proto;
    REQUIRE(inet_pton(AF_INET, src, f.src.data()) == 1);
    REQUIRE(inet_pton(AF_INET, dst, f.dst.data()) == 1);
    f.sport = sport;
    f.dport = dport;
    return f;
}

FlowSpec v6(const char* src, const char* dst, std::uint16_t sport, std::uint16_t dport,
            std::uint8_t proto = 6) {
    FlowSpec f;
    f.ipv6 = true;
    f.proto = proto;
    REQUIRE(inet_pton(AF_INET6, src, f.src.data()) == 1);
    REQUIRE(inet_pton(AF_INET6, dst, f.dst.data()) == 1);
    f.sport = sport;
    f.dport = dport;
    return f;
}

constexpr std::uint32_t kAll = HashSettings::kAllTypes;

}  // namespace

TEST_CASE("the rx hash of an IPv4 TCP frame is the RSS suite's 4-tuple value", "[hash]") {
    // RSS verification suite, IPv4 row 1: 66.9.149.187:2794 -> 161.142.100.80:1766.
    const auto fr = flow_frame(v4("66.9.149.187", "161.142.100.80", 2794, 1766));
    auto h = flow_hash(toeplitz(kAll), fr);
    REQUIRE(h);
    CHECK(h->type == w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    CHECK(h->value == 0x51ccc178U);
    h = flow_hash(toeplitz(w::XEN_NETIF_CTRL_HASH_TYPE_IPV4), fr);  // TCP type off: 2-tuple
    REQUIRE(h);
    CHECK(h->type == w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    CHECK(h->value == 0x323e8fc2U);
}

TEST_CASE("the rx hash input per type: TCP 4-tuple, UDP and fragments address-only, as Linux",
          "[hash]") {
    struct Row {
        FlowSpec f;
        std::uint32_t flags;
        int type;  // -1: no hash
        bool ports;
    };
    auto frag = [](FlowSpec f) {
        f.fragment = true;
        return f;
    };
    const auto t4 = v4("10.1.2.3", "10.9.8.7", 40000, 80);
    const auto u4 = v4("10.1.2.3", "10.9.8.7", 40000, 53, 17);
    const auto t6 = v6("fd00::1", "fd00::2:3", 5000, 443);
    const auto u6 = v6("fd00::1", "fd00::2:3", 5000, 53, 17);
    const std::uint32_t V4 = w::XEN_NETIF_CTRL_HASH_TYPE_IPV4,
                        V4T = w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
                        V6 = w::XEN_NETIF_CTRL_HASH_TYPE_IPV6,
                        V6T = w::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;
    const Row rows[] = {
        {t4, kAll, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, true},
        {t4, V4T, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, true},
        {t4, V4, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4, false},
        {t4, V6 | V6T, -1, false},
        {u4, kAll, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4, false},
        {u4, V4T, -1, false},  // UDP: only the address type (Linux hashes no UDP ports)
        {frag(t4), kAll, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4, false},
        {frag(t4), V4T, -1, false},
        {t6, kAll, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, true},
        {t6, V6, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6, false},
        {t6, V4 | V4T, -1, false},
        {u6, kAll, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6, false},
        {u6, V6T, -1, false},
        {frag(t6), kAll, w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6, false},
    };
    for (const Row& r : rows) {
        INFO("ipv6 " << r.f.ipv6 << " proto " << int{r.f.proto} << " fragment " << r.f.fragment
                     << " flags " << r.flags);
        const auto fr = flow_frame(r.f);
        const auto h = flow_hash(toeplitz(r.flags), fr);
        if (r.type < 0) {
            CHECK_FALSE(h);
            continue;
        }
        REQUIRE(h);
        CHECK(h->type == r.type);
        Bytes in = flow_tuple(r.f);
        REQUIRE(in.size() >= (r.f.ipv6 ? 32U : 8U) + (r.ports ? 4U : 0U));
        in.resize((r.f.ipv6 ? 32U : 8U) + (r.ports ? 4U : 0U));
        CHECK(h->value == toeplitz_hash(kRssKey, in));
    }
}

TEST_CASE("frames that get no rx hash: algorithm NONE, no types, VLAN, not IP, short, bad IHL",
          "[hash]") {
    const auto f = v4("10.1.2.3", "10.9.8.7", 40000, 80);
    const auto fr = flow_frame(f);
    HashSettings none = toeplitz(kAll);
    none.algorithm = w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE;
    CHECK_FALSE(flow_hash(none, fr));
    CHECK_FALSE(flow_hash(toeplitz(0), fr));
    auto tagged = f;
    tagged.vlan = true;  // Linux: skb->protocol is 802.1Q, no hash
    CHECK_FALSE(flow_hash(toeplitz(kAll), flow_frame(tagged)));
    auto arp = fr;
    arp[12] = 0x08;
    arp[13] = 0x06;
    CHECK_FALSE(flow_hash(toeplitz(kAll), arp));
    for (std::size_t len = 0; len < 34; ++len) {  // the IPv4 header cut anywhere
        CHECK_FALSE(flow_hash(toeplitz(kAll), std::span(fr).first(len)));
    }
    auto ihl = fr;
    ihl[14] = 0x44;  // IHL 4
    CHECK_FALSE(flow_hash(toeplitz(kAll), ihl));
    const auto fr6 = flow_frame(v6("fd00::1", "fd00::2", 1, 2));
    CHECK_FALSE(flow_hash(toeplitz(kAll), std::span(fr6).first(14 + 39)));
    // TCP header cut after the IP header: ports read as 0 (Linux __skb_flow_get_ports).
    const auto h = flow_hash(toeplitz(kAll), std::span(fr).first(36));
    REQUIRE(h);
    CHECK(h->type == w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    auto in = flow_tuple(f);
    in[8] = in[9] = in[10] = in[11] = 0;
    CHECK(h->value == toeplitz_hash(kRssKey, in));
}

TEST_CASE("the rx queue: mapping[hash % size], without a table hash % queues", "[hash]") {
    HashSettings s = toeplitz(kAll);
    CHECK(flow_queue(s, 7, 4) == 3);
    CHECK(flow_queue(s, 0xffffffffU, 3) == 0xffffffffU % 3);
    s.mapping_size = 3;
    s.mapping[0] = 2;
    s.mapping[1] = 0;
    s.mapping[2] = 1;
    CHECK(flow_queue(s, 7, 4) == 0);  // 7 % 3 = 1
    CHECK(flow_queue(s, 0, 4) == 2);
    CHECK(flow_queue(s, 0x51ccc178U, 4) == s.mapping[0x51ccc178U % 3]);
}

TEST_CASE("HashState: readers see each published setting with a new generation", "[hash]") {
    HashState st;
    HashSettings got;
    const auto g0 = st.read(got);
    CHECK(got.algorithm == w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
    st.publish(toeplitz(w::XEN_NETIF_CTRL_HASH_TYPE_IPV6));
    CHECK(st.generation() != g0);
    CHECK(st.read(got) == st.generation());
    CHECK(got.flags == w::XEN_NETIF_CTRL_HASH_TYPE_IPV6);
    CHECK(got.key[0] == 0x6d);
}

}  // namespace hv::net
