// netif control requests (netback/ctrl.hpp; xen-abi.md §6.7, Linux netback hash.c): every
// type and every rejection, with a grant copy served from a local table of "granted pages";
// the Toeplitz hash against the Microsoft RSS verification vectors.
#include "netback/ctrl.hpp"

#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <vector>

#include "frames.hpp"
#include "hv/rings/xen/grant_table.hpp"

namespace hv::net {
namespace {

namespace w = hv::rings;
using hv::test::net::kRssKey;

std::vector<std::uint8_t> v4_input(const char* src, const char* dst, int sport, int dport,
                                   bool ports) {
    std::vector<std::uint8_t> in(ports ? 12 : 8);
    REQUIRE(inet_pton(AF_INET, src, in.data()) == 1);
    REQUIRE(inet_pton(AF_INET, dst, in.data() + 4) == 1);
    if (ports) {
        in[8] = static_cast<std::uint8_t>(sport >> 8);
        in[9] = static_cast<std::uint8_t>(sport);
        in[10] = static_cast<std::uint8_t>(dport >> 8);
        in[11] = static_cast<std::uint8_t>(dport);
    }
    return in;
}

std::vector<std::uint8_t> v6_input(const char* src, const char* dst, int sport, int dport) {
    std::vector<std::uint8_t> in(36);
    REQUIRE(inet_pton(AF_INET6, src, in.data()) == 1);
    REQUIRE(inet_pton(AF_INET6, dst, in.data() + 16) == 1);
    in[32] = static_cast<std::uint8_t>(sport >> 8);
    in[33] = static_cast<std::uint8_t>(sport);
    in[34] = static_cast<std::uint8_t>(dport >> 8);
    in[35] = static_cast<std::uint8_t>(dport);
    return in;
}

/// Granted pages by ref; a ref not in the table fails the copy with GNTST_bad_gntref.
struct Grants {
    std::map<std::uint32_t, std::vector<std::byte>> pages;
    unsigned copies = 0;
    CtrlCopyFn fn() {
        return [this](std::uint32_t gref, std::span<std::byte> out) -> std::int16_t {
            ++copies;
            auto it = pages.find(gref);
            if (it == pages.end() || out.size() > it->second.size()) {
                return w::GNTST_bad_gntref;
            }
            std::memcpy(out.data(), it->second.data(), out.size());
            return w::GNTST_okay;
        };
    }
};

w::xen_netif_ctrl_request ctrl_req(std::uint16_t type, std::uint32_t d0 = 0, std::uint32_t d1 = 0,
                              std::uint32_t d2 = 0) {
    static std::uint16_t id = 0;
    return {++id, type, {d0, d1, d2}};
}

}  // namespace

TEST_CASE("Toeplitz matches the RSS verification suite (IPv4 2- and 4-tuple, IPv6 4-tuple)",
          "[netback][ctrl]") {
    struct V4 {
        const char *src, *dst;
        int sport, dport;
        std::uint32_t l3, l4;
    };
    const V4 v4[] = {
        {"66.9.149.187", "161.142.100.80", 2794, 1766, 0x323e8fc2, 0x51ccc178},
        {"199.92.111.2", "65.69.140.83", 14230, 4739, 0xd718262a, 0xc626b0ea},
        {"24.19.198.95", "12.22.207.184", 12898, 38024, 0xd2d0a5de, 0x5c2b394a},
        {"38.27.205.30", "209.142.163.6", 48228, 2217, 0x82989176, 0xafc7327f},
        {"153.39.163.191", "202.188.127.2", 44251, 1303, 0x5d1809c5, 0x10e828a2},
    };
    for (const auto& t : v4) {
        CHECK(toeplitz_hash(kRssKey, v4_input(t.src, t.dst, t.sport, t.dport, false)) == t.l3);
        CHECK(toeplitz_hash(kRssKey, v4_input(t.src, t.dst, t.sport, t.dport, true)) == t.l4);
    }
    CHECK(toeplitz_hash(kRssKey, v6_input("3ffe:2501:200:1fff::7", "3ffe:2501:200:3::1", 2794,
                                          1766)) == 0x40207d3d);
    CHECK(toeplitz_hash(kRssKey, v6_input("3ffe:501:8::260:97ff:fe40:efab", "ff02::1", 14230,
                                          4739)) == 0xdde51bbf);
    CHECK(toeplitz_hash(kRssKey, v6_input("3ffe:1900:4545:3:200:f8ff:fe21:67cf",
                                          "fe80::200:f8ff:fe21:67cf", 44251, 38024)) ==
          0x02d1feef);
}

TEST_CASE("control requests: algorithm, flags, mapping size, and the types not served",
          "[netback][ctrl][hostile]") {
    Grants g;
    CtrlHandler h(4);
    auto run = [&](const w::xen_netif_ctrl_request& r) {
        auto rsp = h.handle(r, g.fn());
        CHECK(rsp.id == r.id);
        CHECK(rsp.type == r.type);
        return rsp;
    };
    for (std::uint16_t t : {w::XEN_NETIF_CTRL_TYPE_INVALID, w::XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE,
                            w::XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING,
                            w::XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING, std::uint16_t{11},
                            std::uint16_t{0xffff}}) {
        CHECK(run(ctrl_req(t, 1, 2, 3)).status == w::XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    }
    // No algorithm yet: flags cannot be read or set.
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS)).status ==
          w::XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, w::XEN_NETIF_CTRL_HASH_TYPE_IPV4)).status ==
          w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM, 2)).status ==
          w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(h.settings().algorithm == w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
                  w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ)).status ==
          w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    auto f = run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS));
    CHECK(f.status == w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(f.data == HashSettings::kAllTypes);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, 1U << 4)).status ==
          w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS,
                  w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP | w::XEN_NETIF_CTRL_HASH_TYPE_IPV6)).status ==
          w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(h.settings().flags ==
          (w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP | w::XEN_NETIF_CTRL_HASH_TYPE_IPV6));
    auto sz = run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE));
    CHECK(sz.status == w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(sz.data == 128);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 129)).status ==
          w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(h.settings().mapping_size == 0);
    CHECK(run(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 128)).status ==
          w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(h.settings().mapping_size == 128);
    CHECK(g.copies == 0);
}

TEST_CASE("SET_HASH_KEY copies up to 40 bytes from the frontend's grant, a bad length or grant "
          "changes nothing", "[netback][ctrl][hostile]") {
    Grants g;
    std::vector<std::byte> page(4096);
    for (std::size_t i = 0; i < page.size(); ++i) {
        page[i] = std::byte(i + 1);
    }
    g.pages[7] = page;
    CtrlHandler h(2);
    auto status = [&](std::uint32_t gref, std::uint32_t len) {
        return h.handle(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, gref, len), g.fn()).status;
    };
    CHECK(status(7, 41) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(status(7, 0xffffffffU) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(g.copies == 0);
    CHECK(status(7, 40) == w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(h.settings().key[0] == 1);
    CHECK(h.settings().key[39] == 40);
    CHECK(status(99, 40) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);  // not granted
    CHECK(h.settings().key[39] == 40);
    CHECK(status(7, 10) == w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(h.settings().key[9] == 10);
    CHECK(h.settings().key[10] == 0);  // the rest zeroed, as Linux
    const unsigned before = g.copies;
    CHECK(status(99, 0) == w::XEN_NETIF_CTRL_STATUS_SUCCESS);  // no copy for an empty key
    CHECK(g.copies == before);
    CHECK(h.settings().key[0] == 0);
}

TEST_CASE("SET_HASH_MAPPING: entries from the grant inside the table's size, each naming a "
          "queue, any failure keeps the table", "[netback][ctrl][hostile]") {
    Grants g;
    std::vector<std::byte> good(4096), bad(4096);
    for (std::uint32_t i = 0; i < 1024; ++i) {
        const std::uint32_t q = i % 3, b = i == 5 ? 3 : q;  // 4th queue does not exist
        std::memcpy(good.data() + 4 * i, &q, 4);
        std::memcpy(bad.data() + 4 * i, &b, 4);
    }
    g.pages[1] = good;
    g.pages[2] = bad;
    CtrlHandler h(3);
    auto status = [&](std::uint32_t gref, std::uint32_t len, std::uint32_t off) {
        return h.handle(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, gref, len, off), g.fn())
            .status;
    };
    CHECK(status(1, 1, 0) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);  // size is 0
    REQUIRE(h.handle(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 64), g.fn()).status ==
            w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(status(1, 65, 0) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(status(1, 2, 63) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
    CHECK(status(1, 2, 0xffffffffU) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);  // wraps
    CHECK(g.copies == 0);
    CHECK(status(1, 64, 0) == w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(h.settings().mapping[4] == 1);
    CHECK(h.settings().mapping[63] == 0);
    CHECK(status(2, 10, 0) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);  // entry 5 = 3
    CHECK(h.settings().mapping[5] == 2);  // unchanged
    CHECK(status(55, 10, 0) == w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);  // bad grant
    CHECK(status(1, 4, 60) == w::XEN_NETIF_CTRL_STATUS_SUCCESS);  // entries 0..3 of the page
    CHECK(h.settings().mapping[61] == 1);
    CHECK(status(1, 0, 64) == w::XEN_NETIF_CTRL_STATUS_SUCCESS);  // nothing, at the end
    // A new size clears the table.
    REQUIRE(h.handle(ctrl_req(w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, 8), g.fn()).status ==
            w::XEN_NETIF_CTRL_STATUS_SUCCESS);
    CHECK(h.settings().mapping[4] == 0);
}

}  // namespace hv::net
