// parse_tx(): every rejection branch of Linux netback's tx rules, one [hostile] test each.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "netback/tx_parse.hpp"

namespace {

using namespace hv::net;
namespace w = hv::rings;

w::netif_tx_request req(std::uint16_t size, std::uint16_t flags = 0, std::uint16_t offset = 0,
                        std::uint16_t id = 0, std::uint32_t gref = 0) {
    w::netif_tx_request r{};
    r.gref = gref;
    r.offset = offset;
    r.flags = flags;
    r.id = id;
    r.size = size;
    return r;
}

w::netif_tx_request as_slot(const w::netif_extra_info& e) {
    w::netif_tx_request r{};
    std::memset(&r, 0xAB, sizeof r);  // the 4 bytes after the extra are junk a frontend left
    std::memcpy(&r, &e, sizeof e);
    return r;
}

w::netif_tx_request gso_extra(std::uint16_t mss, std::uint8_t type, std::uint8_t flags = 0) {
    w::netif_extra_info e{};
    e.type = w::XEN_NETIF_EXTRA_TYPE_GSO;
    e.flags = flags;
    e.u.gso.size = mss;
    e.u.gso.type = type;
    return as_slot(e);
}

w::netif_tx_request typed_extra(std::uint8_t type, std::uint8_t flags = 0) {
    w::netif_extra_info e{};
    e.type = type;
    e.flags = flags;
    return as_slot(e);
}

/// A packet of 1 + follow slots: the first carries `first_len`, each follow-on 100 bytes.
std::vector<w::netif_tx_request> chain(unsigned follow, std::uint16_t first_len = 100) {
    std::vector<w::netif_tx_request> v;
    const auto total = static_cast<std::uint16_t>(first_len + 100 * follow);
    v.push_back(req(total, follow > 0 ? w::NETTXF_more_data : 0, 0, 0, 1000));
    for (unsigned i = 1; i <= follow; ++i) {
        v.push_back(req(100, i < follow ? w::NETTXF_more_data : 0, 0,
                        static_cast<std::uint16_t>(i), 1000 + i));
    }
    return v;
}

const TxConfig cfg{};

}  // namespace

TEST_CASE("a single-slot packet is forwarded with its whole size", "[netback][tx]") {
    const std::vector slots{req(60, w::NETTXF_csum_blank, 100, 7, 42)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::forward);
    CHECK(p.error == TxError::none);
    CHECK(p.slots_consumed == 1);
    CHECK(p.nr_frags == 1);
    CHECK(p.frags[0].size == 60);
    CHECK(p.frags[0].offset == 100);
    CHECK(p.frags[0].gref == 42);
    CHECK(p.csum_blank());
    CHECK_FALSE(p.data_validated());
}

TEST_CASE("a multi-slot packet's first fragment is the total minus the follow-on sizes",
          "[netback][tx]") {
    auto slots = chain(3, 54);
    slots.push_back(req(99, 0, 0, 77));  // the next packet: not consumed
    const TxPacket p = parse_tx(slots, cfg);
    REQUIRE(p.verdict == TxVerdict::forward);
    CHECK(p.slots_consumed == 4);
    CHECK(p.total_size == 354);
    REQUIRE(p.nr_frags == 4);
    CHECK(p.frags[0].size == 54);
    CHECK(p.frags[3].id == 3);
    CHECK(p.frags[3].gref == 1003);
}

TEST_CASE("no slot at all is nothing to do, not a fault", "[netback][tx]") {
    const TxPacket p = parse_tx({}, cfg);
    CHECK(p.verdict == TxVerdict::none);
    CHECK(p.slots_consumed == 0);
}

TEST_CASE("extra_info with no slot after it disables the vif", "[netback][tx][hostile]") {
    const std::vector slots{req(60, w::NETTXF_extra_info)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::missing_extra);
    CHECK(p.slots_consumed == 0);
}

TEST_CASE("an extra chain whose MORE flag points past the ring disables the vif",
          "[netback][tx][hostile]") {
    const std::vector slots{req(60, w::NETTXF_extra_info),
                            gso_extra(1400, w::XEN_NETIF_GSO_TYPE_TCPV4,
                                      w::XEN_NETIF_EXTRA_FLAG_MORE)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::missing_extra);
}

TEST_CASE("an extra of type NONE disables the vif", "[netback][tx][hostile]") {
    const std::vector slots{req(60, w::NETTXF_extra_info), typed_extra(0)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::extra_type_invalid);
}

TEST_CASE("an extra of type MAX or above disables the vif", "[netback][tx][hostile]") {
    const auto type = GENERATE(std::uint8_t{6}, std::uint8_t{7}, std::uint8_t{255});
    const std::vector slots{req(60, w::NETTXF_extra_info), typed_extra(type)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::extra_type_invalid);
}

TEST_CASE("Linux's XDP extra is accepted on tx and ignored", "[netback][tx]") {
    const std::vector slots{req(60, w::NETTXF_extra_info), typed_extra(w::XEN_NETIF_EXTRA_TYPE_XDP)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::forward);
    CHECK(p.slots_consumed == 2);
    CHECK(p.extra_count == 1);
}

TEST_CASE("more_data with no slot after it disables the vif", "[netback][tx][hostile]") {
    auto slots = chain(2);
    slots.pop_back();
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::missing_fragment);
}

TEST_CASE("18 follow-on slots are accepted", "[netback][tx]") {
    const auto slots = chain(XEN_NETBK_LEGACY_SLOTS_MAX);
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::forward);
    CHECK(p.slots_consumed == 19);
    CHECK(p.nr_frags == 19);
}

TEST_CASE("19 or 20 follow-on slots drop the packet and consume all its slots",
          "[netback][tx][hostile]") {
    const unsigned follow = GENERATE(19U, 20U);
    const auto slots = chain(follow);
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::drop);
    CHECK(p.error == TxError::too_many_slots);
    CHECK(p.slots_consumed == 1 + follow);
    CHECK(p.nr_frags == 1 + follow);
    std::vector<w::netif_tx_response> rsp(p.slots_consumed);
    REQUIRE(build_tx_responses(p, to_netif_status(p.verdict, p.error), rsp) == 1 + follow);
    for (unsigned i = 0; i < rsp.size(); ++i) {
        CHECK(rsp[i].id == i);
        CHECK(rsp[i].status == w::NETIF_RSP_ERROR);
    }
}

TEST_CASE("a 21st follow-on slot marks the frontend malicious", "[netback][tx][hostile]") {
    const auto slots = chain(default_fatal_skb_slots + 1);
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::too_many_slots_fatal);
    CHECK(p.slots_consumed == 0);
}

TEST_CASE("a fatal-slot setting above Linux's is clamped so the slot table cannot overflow",
          "[netback][tx][hostile]") {
    TxConfig big;
    big.fatal_slots = 1000;
    big.max_slots = 1000;
    const auto slots = chain(40);
    const TxPacket p = parse_tx(slots, big);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::too_many_slots_fatal);
}

TEST_CASE("a fragment larger than what is left of the total drops the packet",
          "[netback][tx][hostile]") {
    auto slots = chain(3);
    slots[2].size = 4000;  // total 400 cannot hold it (a wrapped >= 64 KiB packet)
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::drop);
    CHECK(p.error == TxError::fragment_exceeds_total);
    CHECK(p.slots_consumed == 4);
}

TEST_CASE("a follow-on slot crossing its page disables the vif", "[netback][tx][hostile]") {
    auto slots = chain(2);
    slots[1].offset = 4000;  // 4000 + 100 > 4096
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::crosses_page);
}

TEST_CASE("a page crossing is fatal even in a packet already being dropped",
          "[netback][tx][hostile]") {
    auto slots = chain(20);
    slots[20].offset = 4090;  // slot 20 is past the drop limit
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::crosses_page);
}

TEST_CASE("a first fragment crossing its page disables the vif", "[netback][tx][hostile]") {
    const std::vector slots{req(200, 0, 4000)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::crosses_page);
}

TEST_CASE("a packet shorter than an Ethernet header is dropped", "[netback][tx][hostile]") {
    const std::vector slots{req(eth_header_bytes - 1, 0, 0, 9)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::drop);
    CHECK(p.error == TxError::packet_too_small);
    CHECK(p.slots_consumed == 1);
    w::netif_tx_response rsp{};
    REQUIRE(build_tx_responses(p, to_netif_status(p.verdict, p.error), {&rsp, 1}) == 1);
    CHECK(rsp.id == 9);
    CHECK(rsp.status == w::NETIF_RSP_ERROR);
}

TEST_CASE("a first fragment shorter than an Ethernet header is dropped even if the total is not",
          "[netback][tx][hostile]") {
    const auto slots = chain(2, 10);  // total 210, first fragment 10
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::drop);
    CHECK(p.error == TxError::packet_too_small);
    CHECK(p.slots_consumed == 3);
}

TEST_CASE("a GSO extra with MSS 0 disables the vif", "[netback][tx][hostile]") {
    const std::vector slots{req(1000, w::NETTXF_extra_info),
                            gso_extra(0, w::XEN_NETIF_GSO_TYPE_TCPV4)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::gso_size_zero);
}

TEST_CASE("a GSO extra of an undefined type disables the vif", "[netback][tx][hostile]") {
    const auto type = GENERATE(std::uint8_t{0}, std::uint8_t{3}, std::uint8_t{200});
    const std::vector slots{req(1000, w::NETTXF_extra_info), gso_extra(1400, type)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::fatal);
    CHECK(p.error == TxError::gso_type_unknown);
}

TEST_CASE("a GSO type the backend did not offer drops the packet", "[netback][tx][hostile]") {
    TxConfig v4only;
    v4only.gso_tcpv6 = false;
    const std::vector slots{req(1000, w::NETTXF_extra_info | w::NETTXF_csum_blank),
                            gso_extra(1400, w::XEN_NETIF_GSO_TYPE_TCPV6)};
    const TxPacket p = parse_tx(slots, v4only);
    CHECK(p.verdict == TxVerdict::drop);
    CHECK(p.error == TxError::gso_type_not_offered);
    CHECK(p.slots_consumed == 2);
    std::vector<w::netif_tx_response> rsp(2);
    REQUIRE(build_tx_responses(p, to_netif_status(p.verdict, p.error), rsp) == 2);
    CHECK(rsp[0].status == w::NETIF_RSP_ERROR);
    CHECK(rsp[1].status == w::NETIF_RSP_NULL);
}

TEST_CASE("a GSO packet carries its type and MSS, extras answered with NETIF_RSP_NULL",
          "[netback][tx]") {
    w::netif_extra_info h{};
    h.type = w::XEN_NETIF_EXTRA_TYPE_HASH;
    h.u.hash.type = w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
    h.u.hash.value[0] = 0x78;
    h.u.hash.value[1] = 0x56;
    h.u.hash.value[2] = 0x34;
    h.u.hash.value[3] = 0x12;
    std::vector slots{req(3000, w::NETTXF_extra_info | w::NETTXF_more_data | w::NETTXF_csum_blank,
                          0, 5),
                      gso_extra(1448, w::XEN_NETIF_GSO_TYPE_TCPV4, w::XEN_NETIF_EXTRA_FLAG_MORE),
                      as_slot(h), req(2000, 0, 0, 6)};
    const TxPacket p = parse_tx(slots, cfg);
    REQUIRE(p.verdict == TxVerdict::forward);
    CHECK(p.gso_type == w::XEN_NETIF_GSO_TYPE_TCPV4);
    CHECK(p.gso_size == 1448);
    CHECK(p.has_hash);
    CHECK(p.hash_value == 0x12345678U);
    CHECK(p.extra_count == 2);
    CHECK(p.slots_consumed == 4);
    CHECK(p.frags[0].size == 1000);
    std::vector<w::netif_tx_response> rsp(4);
    REQUIRE(build_tx_responses(p, to_netif_status(p.verdict, p.error), rsp) == 4);
    CHECK(rsp[0].id == 5);
    CHECK(rsp[0].status == w::NETIF_RSP_OKAY);
    CHECK(rsp[1].status == w::NETIF_RSP_NULL);
    CHECK(rsp[2].status == w::NETIF_RSP_NULL);
    CHECK(rsp[3].id == 6);
    CHECK(rsp[3].status == w::NETIF_RSP_OKAY);
}

TEST_CASE("a multicast-add request is answered alone, its more_data slots are the next packet",
          "[netback][tx]") {
    w::netif_extra_info m{};
    m.type = w::XEN_NETIF_EXTRA_TYPE_MCAST_ADD;
    const std::uint8_t addr[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};
    std::memcpy(m.u.mcast.addr, addr, 6);
    const std::vector slots{req(0, w::NETTXF_extra_info | w::NETTXF_more_data, 0, 3), as_slot(m),
                            req(60, 0, 0, 4)};
    const TxPacket p = parse_tx(slots, cfg);
    REQUIRE(p.verdict == TxVerdict::multicast);
    CHECK(p.mcast_add);
    CHECK(p.mcast_addr[5] == 0xfb);
    CHECK(p.slots_consumed == 2);
    std::vector<w::netif_tx_response> rsp(2);
    REQUIRE(build_tx_responses(p, to_netif_status(p.verdict, p.error, false), rsp) == 2);
    CHECK(rsp[0].id == 3);
    CHECK(rsp[0].status == w::NETIF_RSP_ERROR);
    CHECK(rsp[1].status == w::NETIF_RSP_NULL);
}

TEST_CASE("wire status comes from one mapping", "[netback][tx]") {
    CHECK(to_netif_status(TxVerdict::forward, TxError::none) == w::NETIF_RSP_OKAY);
    CHECK(to_netif_status(TxVerdict::multicast, TxError::none, true) == w::NETIF_RSP_OKAY);
    CHECK(to_netif_status(TxVerdict::multicast, TxError::none, false) == w::NETIF_RSP_ERROR);
    CHECK(to_netif_status(TxVerdict::drop, TxError::too_many_slots) == w::NETIF_RSP_ERROR);
    CHECK(to_netif_status(TxVerdict::drop, TxError::packet_too_small) == w::NETIF_RSP_ERROR);
    CHECK(to_netif_status(TxVerdict::forward, TxError::host_dropped) == w::NETIF_RSP_DROPPED);
    CHECK(to_netif_status(TxVerdict::fatal, TxError::crosses_page) == w::NETIF_RSP_ERROR);
}

TEST_CASE("responses are not built for a fatal packet or into too small an array",
          "[netback][tx][hostile]") {
    const auto slots = chain(3);
    const TxPacket ok = parse_tx(slots, cfg);
    std::vector<w::netif_tx_response> rsp(3);
    CHECK(build_tx_responses(ok, 0, rsp) == 0);  // needs 4
    const TxPacket bad = parse_tx(chain(25), cfg);
    CHECK(build_tx_responses(bad, 0, rsp) == 0);
}

TEST_CASE("random slot sequences never break the parser's invariants", "[netback][tx][hostile]") {
    const char* env = std::getenv("HV_TEST_SEED");
    const std::uint32_t seed =
        env != nullptr ? static_cast<std::uint32_t>(std::strtoul(env, nullptr, 0)) : 0x6e657462U;
    std::printf("netback tx random seed: %u\n", seed);
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    std::vector<w::netif_tx_request> slots(64);
    for (int iter = 0; iter < 20000; ++iter) {
        const std::size_t n = rng() % slots.size();
        for (std::size_t i = 0; i < n; ++i) {
            w::netif_tx_request& r = slots[i];
            r.gref = static_cast<std::uint32_t>(rng());
            r.offset = static_cast<std::uint16_t>(rng() % 5000);
            r.size = static_cast<std::uint16_t>(rng() % 3 == 0 ? rng() : rng() % 5000);
            r.flags = static_cast<std::uint16_t>(rng() % 16);
            r.id = static_cast<std::uint16_t>(rng());
        }
        const TxPacket p = parse_tx({slots.data(), n}, cfg);
        REQUIRE(p.slots_consumed <= n);
        REQUIRE(p.nr_frags <= p.frags.size());
        if (p.verdict == TxVerdict::fatal || p.verdict == TxVerdict::none) {
            REQUIRE(p.slots_consumed == 0);
            continue;
        }
        REQUIRE(p.slots_consumed >= 1);
        if (p.verdict == TxVerdict::forward) {
            unsigned sum = 0;
            for (unsigned i = 0; i < p.nr_frags; ++i) {
                REQUIRE(unsigned{p.frags[i].offset} + p.frags[i].size <= 4096);
                sum += p.frags[i].size;
            }
            REQUIRE(sum == p.total_size);
            REQUIRE(p.frags[0].size >= eth_header_bytes);
            REQUIRE(p.nr_frags <= 1 + XEN_NETBK_LEGACY_SLOTS_MAX);
            REQUIRE(p.slots_consumed == p.nr_frags + p.extra_count);
        }
        std::vector<w::netif_tx_response> rsp(p.slots_consumed);
        REQUIRE(build_tx_responses(p, to_netif_status(p.verdict, p.error), rsp) ==
                p.slots_consumed);
    }
}

TEST_CASE("extra_info on a follow-on slot is ignored, as Linux does", "[netback][tx][hostile]") {
    auto slots = chain(2);
    slots[1].flags |= w::NETTXF_extra_info;  // only slot 0's flag means "extras follow"
    slots.push_back(typed_extra(0));         // would be fatal if parsed as an extra
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::forward);
    CHECK(p.slots_consumed == 3);
    CHECK(p.extra_count == 0);
}

TEST_CASE("undefined flag bits are ignored and the checksum flags pass through",
          "[netback][tx][hostile]") {
    const std::vector slots{req(60, 0xfff0 | w::NETTXF_data_validated)};
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::forward);
    CHECK(p.data_validated());
    CHECK_FALSE(p.csum_blank());
    CHECK(p.slots_consumed == 1);
}

TEST_CASE("extra slots do not count towards the follow-on slot limits", "[netback][tx]") {
    auto slots = chain(XEN_NETBK_LEGACY_SLOTS_MAX);
    slots[0].flags |= w::NETTXF_extra_info;
    w::netif_extra_info h{};
    h.type = w::XEN_NETIF_EXTRA_TYPE_HASH;
    h.flags = w::XEN_NETIF_EXTRA_FLAG_MORE;
    slots.insert(slots.begin() + 1, as_slot(h));
    slots.insert(slots.begin() + 2, typed_extra(w::XEN_NETIF_EXTRA_TYPE_XDP));
    const TxPacket p = parse_tx(slots, cfg);
    CHECK(p.verdict == TxVerdict::forward);
    CHECK(p.extra_count == 2);
    CHECK(p.slots_consumed == 1 + 2 + XEN_NETBK_LEGACY_SLOTS_MAX);
}

TEST_CASE("a multicast-delete request carries its address", "[netback][tx]") {
    w::netif_extra_info m{};
    m.type = w::XEN_NETIF_EXTRA_TYPE_MCAST_DEL;
    m.u.mcast.addr[0] = 0x33;
    m.u.mcast.addr[5] = 0x01;
    const std::vector slots{req(0, w::NETTXF_extra_info, 0, 8), as_slot(m)};
    const TxPacket p = parse_tx(slots, cfg);
    REQUIRE(p.verdict == TxVerdict::multicast);
    CHECK(p.mcast_del);
    CHECK_FALSE(p.mcast_add);
    CHECK(p.mcast_addr[0] == 0x33);
    CHECK(p.mcast_addr[5] == 0x01);
}
