// hv-min's wire decoder on a well-formed batch. The hv::rings grant / event channel structs it
// carries are static_asserted against Xen's own headers in tests/rings/abi_static_check.cpp.
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>

#include "hv/rings/xen/grant_table.hpp"
#include "hvmin/wire.hpp"

namespace r = hv::rings;

TEST_CASE("the decoder accepts a well-formed batch and echoes its sequence number",
          "[hvmin][abi]") {
    std::byte msg[sizeof(hv::hvmin::wire::Header) + 2 * sizeof(r::gnttab_copy)]{};
    hv::hvmin::wire::Header h{hv::hvmin::wire::kMagic,
                              static_cast<std::uint16_t>(hv::hvmin::wire::Op::gnttab_copy), 0, 2,
                              77};
    std::memcpy(msg, &h, sizeof h);
    hv::hvmin::wire::Decoded d{};
    hv::hvmin::wire::DecodeError e{};
    REQUIRE(hv::hvmin::wire::decode(msg, d, e));
    CHECK(d.count == 2);
    CHECK(d.seq == 77);
    CHECK(d.body.size() == 2 * sizeof(r::gnttab_copy));
}
