// libFuzzer: arbitrary bytes as a host frame hashed for the rx HASH extra (netback/hash.hpp):
// the first byte picks the enabled types and a mapping size, the rest is the frame.
// Invariants: the input is 8, 12, 32 or 36 bytes of the right type, the type is one that was
// enabled, the hash equals toeplitz_hash of that input, the queue names an existing one.
#include <array>
#include <cstdint>

#include "hv/assert.hpp"
#include "netback/hash.hpp"

using namespace hv::net;
namespace w = hv::rings;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    HashSettings s;
    s.algorithm = w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ;
    s.flags = data[0] & HashSettings::kAllTypes;
    s.key.fill(0x6d);
    s.mapping_size = data[0] >> 4;
    for (std::uint32_t i = 0; i < s.mapping_size; ++i) {
        s.mapping[i] = i % 3;
    }
    const std::span<const std::uint8_t> frame(data + 1, size - 1);
    std::array<std::uint8_t, kMaxHashInput> in{};
    std::uint8_t type = 0xff;
    const std::size_t n = flow_hash_input(s.flags, frame, in, type);
    const auto h = flow_hash(s, frame);
    HV_ASSERT((n == 0) == !h.has_value());
    if (h) {
        HV_ASSERT(h->type == type && ((s.flags >> type) & 1U) != 0);
        const bool v6 = type >= w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6;
        const bool tcp = type == w::_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP ||
                         type == w::_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;
        HV_ASSERT(n == (v6 ? 32U : 8U) + (tcp ? 4U : 0U));
        HV_ASSERT(h->value == toeplitz_hash(s.key, std::span(in).first(n)));
    }
    HV_ASSERT(flow_queue(s, h ? h->value : 0, 3) < 3);
    return 0;
}
