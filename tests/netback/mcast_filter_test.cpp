// McastFilter (netback/mcast.hpp) alone: what passes with filtering on and off, add/del, the
// 64-entry limit, duplicates, short frames.
#include <catch2/catch.hpp>

#include <vector>

#include "netback/mcast.hpp"

namespace hv::net {
namespace {

std::vector<std::byte> to(const McastFilter::Addr& a, std::size_t len = 60) {
    std::vector<std::byte> f(len);
    for (std::size_t i = 0; i < a.size() && i < len; ++i) {
        f[i] = std::byte(a[i]);
    }
    return f;
}

constexpr McastFilter::Addr kGroup{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};
constexpr McastFilter::Addr kUnicast{0x00, 0x16, 0x3e, 0x00, 0x00, 0x01};
constexpr McastFilter::Addr kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

}  // namespace

TEST_CASE("the multicast filter passes everything while off, only listed groups while on",
          "[netback][mcast]") {
    McastFilter f;
    CHECK(f.accepts(to(kGroup)));
    f.set_enabled(true);
    CHECK_FALSE(f.accepts(to(kGroup)));
    CHECK(f.accepts(to(kUnicast)));
    CHECK(f.accepts(to(kBroadcast)));
    CHECK(f.accepts(to(kGroup, 5)));  // shorter than an address: not multicast to anyone
    REQUIRE(f.add(kGroup));
    CHECK(f.accepts(to(kGroup)));
    f.del(kGroup);
    CHECK_FALSE(f.accepts(to(kGroup)));
    f.del(kGroup);  // not listed: ignored
    CHECK(f.size() == 0);
}

TEST_CASE("the multicast filter keeps 64 entries, duplicates included, as Linux",
          "[netback][mcast][hostile]") {
    McastFilter f;
    f.set_enabled(true);
    REQUIRE(f.add(kGroup));
    REQUIRE(f.add(kGroup));
    CHECK(f.size() == 2);
    f.del(kGroup);
    CHECK(f.accepts(to(kGroup)));  // one entry left
    for (std::size_t i = 1; i < McastFilter::kMax; ++i) {
        REQUIRE(f.add({0x01, 0, 0x5e, 0, 1, static_cast<std::uint8_t>(i)}));
    }
    CHECK(f.size() == McastFilter::kMax);
    CHECK_FALSE(f.add({0x01, 0, 0x5e, 0, 2, 0}));
    CHECK_FALSE(f.accepts(to({0x01, 0, 0x5e, 0, 2, 0})));
    CHECK(f.add(kUnicast) == false);
    f.del({0x01, 0, 0x5e, 0, 1, 7});
    CHECK(f.add(kUnicast));  // a non-multicast address is stored too (it never matters)
    CHECK(f.accepts(to({0x01, 0, 0x5e, 0, 1, 63})));
    CHECK_FALSE(f.accepts(to({0x01, 0, 0x5e, 0, 1, 7})));
}

}  // namespace hv::net
