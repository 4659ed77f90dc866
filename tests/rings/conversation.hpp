// The request/response contents of the ring conversations, shared by the Xen-macro side
// (xen_oracle.cpp) and ours (abi_test.cpp). Templates over the wire types, which have the same
// field names on both sides. Test-only.
#pragma once

#include <cstdint>
#include <cstring>

namespace hv::test::conv {

template <class R>
void fill_blkif_request(R& r, std::uint32_t i) {
    std::memset(static_cast<void*>(&r), 0, sizeof r);
    r.operation = static_cast<std::uint8_t>(i % 2);
    r.nr_segments = static_cast<std::uint8_t>(i % 12);
    r.handle = static_cast<std::uint16_t>(i * 7);
    r.id = 0xA000000000000000ULL + i;
    r.sector_number = std::uint64_t{i} * 8;
    for (unsigned s = 0; s < 11; ++s) {
        r.seg[s].gref = i * 16 + s;
        r.seg[s].first_sect = static_cast<std::uint8_t>(s % 8);
        r.seg[s].last_sect = 7;
    }
}

template <class Rsp, class Req>
void blkif_response_for(Rsp& rsp, const Req& req) {
    std::memset(static_cast<void*>(&rsp), 0, sizeof rsp);
    rsp.id = req.id;
    rsp.operation = req.operation;
    rsp.status = static_cast<std::int16_t>(req.id % 3 == 0 ? -1 : 0);
}

template <class R>
void fill_netif_tx_request(R& r, std::uint32_t i) {
    std::memset(static_cast<void*>(&r), 0, sizeof r);
    r.gref = 0x10000 + i;
    r.offset = static_cast<std::uint16_t>(i % 4096);
    r.flags = static_cast<std::uint16_t>(i % 16);
    r.id = static_cast<std::uint16_t>(i);
    r.size = static_cast<std::uint16_t>(i % 1500);
}

template <class Rsp, class Req>
void netif_tx_response_for(Rsp& rsp, const Req& req) {
    std::memset(static_cast<void*>(&rsp), 0, sizeof rsp);
    rsp.id = req.id;
    rsp.status = static_cast<std::int16_t>(req.id % 5 == 0 ? 1 : 0);
}

/// Round k: does the back end run its final check (re-arming req_event)? Skipping it on some
/// rounds leaves a stale event so later pushes must *not* notify.
inline bool back_final_checks(unsigned k) {
    return k % 3 != 1;
}
inline bool front_final_checks(unsigned k) {
    return k % 4 != 2;
}

}  // namespace hv::test::conv
