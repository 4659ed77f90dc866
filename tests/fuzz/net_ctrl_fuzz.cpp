// libFuzzer: arbitrary bytes as a netif control ring's requests (netback/ctrl.hpp), served in
// order; the grant copies read from the rest of the input, and a grant ref of 3k fails.
// Invariants: id/type echoed, a defined status, a configuration Linux would accept (mapping
// size ≤ 128 with every entry naming a queue, a known algorithm, known hash types).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "hv/assert.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "netback/ctrl.hpp"

using namespace hv::net;
namespace w = hv::rings;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) {
        return 0;
    }
    const unsigned queues = 1 + data[0] % 8;
    CtrlHandler h(queues);
    const std::uint8_t* page = data;  // what a granted page holds: the input itself
    const std::size_t page_len = size;
    CtrlCopyFn copy = [&](std::uint32_t gref, std::span<std::byte> out) -> std::int16_t {
        HV_ASSERT(out.size() <= w::XEN_PAGE_SIZE);
        if (gref % 3 == 0) {
            return w::GNTST_bad_gntref;
        }
        for (std::size_t i = 0; i < out.size(); ++i) {
            out[i] = std::byte(page_len == 0 ? 0 : page[(gref + i) % page_len]);
        }
        return w::GNTST_okay;
    };
    for (std::size_t at = 1; at + sizeof(w::xen_netif_ctrl_request) <= size;
         at += sizeof(w::xen_netif_ctrl_request)) {
        w::xen_netif_ctrl_request req;
        std::memcpy(&req, data + at, sizeof req);
        // Mostly the defined types (a set top bit keeps the raw one), to reach their checks.
        if ((req.type & 0x8000U) == 0) {
            req.type = static_cast<std::uint16_t>(req.type % 12);
        }
        const auto rsp = h.handle(req, copy);
        HV_ASSERT(rsp.id == req.id && rsp.type == req.type);
        HV_ASSERT(rsp.status <= w::XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW);
        const HashSettings& s = h.settings();
        HV_ASSERT(s.mapping_size <= HashSettings::kMaxMapping);
        for (std::uint32_t i = 0; i < s.mapping_size; ++i) {
            HV_ASSERT(s.mapping[i] < queues);
        }
        HV_ASSERT(s.algorithm == w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE ||
              s.algorithm == w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ);
        HV_ASSERT((s.flags & ~HashSettings::kAllTypes) == 0);
        (void)toeplitz_hash(s.key, {data, std::min<std::size_t>(size, 36)});
    }
    return 0;
}
