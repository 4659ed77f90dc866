// libFuzzer target: arbitrary bytes become a shared ring (page contents, start index) and a
// script of hostile producer moves (index writes, slot rewrites) interleaved with back-end
// calls. Checks against a reference model: errors exactly when the producer index is
// impossible, never a slot outside the ring (ASan: the ring is an exact-size heap block),
// copies equal the slot bytes at take time, notify decisions follow xen-abi §1.4.
// Also linked into rings_tests, which replays seeded random inputs in every build.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/ring.hpp"

using namespace hv::rings;


namespace {

#define FUZZ_CHECK(cond)      \
    do {                      \
        if (!(cond)) {        \
            __builtin_trap(); \
        }                     \
    } while (0)

struct Input {
    const std::uint8_t* p;
    std::size_t n;
    bool empty() const { return n == 0; }
    std::uint8_t u8() {
        if (n == 0) {
            return 0;
        }
        --n;
        return *p++;
    }
    std::uint32_t u32() {
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            v = (v << 8) | u8();
        }
        return v;
    }
};

template <class P>
void run(Input& in, unsigned pages) {
    const std::size_t bytes = std::size_t{pages} * XEN_PAGE_SIZE;
    // Exact-size allocation: any access past the ring is an ASan heap-buffer-overflow.
    auto* mem = static_cast<std::byte*>(std::aligned_alloc(XEN_PAGE_SIZE, bytes));
    FUZZ_CHECK(mem != nullptr);
    const RING_IDX start = in.u32();
    // Page contents: a pattern of up to 255 input bytes repeated over the whole ring (short
    // inputs still reach the script below; case 2 writes arbitrary bytes anywhere later).
    const std::size_t pattern_len = std::min<std::size_t>(in.u8(), in.n);
    const std::uint8_t* pattern = in.p;
    in.p += pattern_len;
    in.n -= pattern_len;
    for (std::size_t i = 0; i < bytes; ++i) {
        mem[i] = static_cast<std::byte>(pattern_len == 0 ? 0 : pattern[i % pattern_len]);
    }
    auto back_r = BackRing<P>::attach({mem, bytes}, start);
    FUZZ_CHECK(back_r.has_value());
    BackRing<P> back = *back_r;
    auto* hdr = reinterpret_cast<SringHeader*>(mem);
    const unsigned size = back.size();
    FUZZ_CHECK(size == ring_entries_for_pages<P>(pages));
    auto* ring = mem + sizeof(SringHeader);

    // Reference model of the back end's private state.
    RING_IDX req_cons = start;
    RING_IDX rsp_prod_pvt = start;
    RING_IDX validated = start;

    auto model_unconsumed = [&](RING_IDX prod, bool& bad) -> unsigned {
        const RING_IDX ahead = prod - rsp_prod_pvt;
        bad = ahead > size || ahead < static_cast<RING_IDX>(req_cons - rsp_prod_pvt);
        return prod - req_cons;
    };

    for (int step = 0; step < 256 && !in.empty(); ++step) {
        switch (in.u8() % 8) {
            case 0:  // hostile producer index, arbitrary
                hdr->req_prod = in.u32();
                break;
            case 1:  // plausible producer index: near the consumer
                hdr->req_prod = req_cons + (in.u8() % (size + 3)) - 1;
                break;
            case 2: {  // peer rewrites a slot
                const std::size_t off = (in.u32() % (size * entry_size<P>));
                ring[off] = static_cast<std::byte>(in.u8());
                break;
            }
            case 3: {
                bool bad = false;
                const unsigned expect = model_unconsumed(hdr->req_prod, bad);
                const RING_IDX prod = hdr->req_prod;
                auto n = back.unconsumed();
                FUZZ_CHECK(n.has_value() == !bad);
                if (n) {
                    FUZZ_CHECK(*n == expect);
                    validated = prod;
                }
                break;
            }
            case 4: {  // take up to k requests
                const unsigned k = in.u8() % 40;
                for (unsigned i = 0; i < k; ++i) {
                    typename P::request want;
                    std::memcpy(&want, ring + (req_cons & (size - 1)) * entry_size<P>, sizeof want);
                    auto got = back.take_request();
                    const bool may = req_cons != validated &&
                                     static_cast<RING_IDX>(req_cons - rsp_prod_pvt) < size;
                    FUZZ_CHECK(got.has_value() == may);
                    if (!got) {
                        break;
                    }
                    FUZZ_CHECK(std::memcmp(&*got, &want, sizeof want) == 0);
                    ++req_cons;
                }
                break;
            }
            case 5: {  // answer up to k in-flight requests
                const unsigned k = in.u8() % 40;
                for (unsigned i = 0; i < k && back.in_flight() > 0; ++i) {
                    typename P::response rsp;
                    std::memset(&rsp, static_cast<int>(i), sizeof rsp);
                    back.put_response(rsp);
                    ++rsp_prod_pvt;
                }
                FUZZ_CHECK(back.rsp_prod_pvt() == rsp_prod_pvt);
                break;
            }
            case 6: {  // push responses with the notify check against a hostile rsp_event
                hdr->rsp_event = in.u32();
                const RING_IDX old = hdr->rsp_prod;
                const RING_IDX ev = hdr->rsp_event;
                const bool notify = back.push_responses();
                FUZZ_CHECK(hdr->rsp_prod == rsp_prod_pvt);
                FUZZ_CHECK(notify == (static_cast<RING_IDX>(rsp_prod_pvt - ev) <
                                      static_cast<RING_IDX>(rsp_prod_pvt - old)));
                break;
            }
            case 7: {  // final check with a hold-off
                const unsigned batch = 1 + in.u8() % size;
                bool bad = false;
                const unsigned expect = model_unconsumed(hdr->req_prod, bad);
                const RING_IDX prod = hdr->req_prod;
                auto more = back.final_check_for_requests(batch);
                FUZZ_CHECK(more.has_value() == !bad);
                if (more) {
                    FUZZ_CHECK(*more == (expect >= batch));
                    validated = prod;
                    if (!*more) {
                        FUZZ_CHECK(hdr->req_event == static_cast<RING_IDX>(req_cons + batch));
                    }
                }
                break;
            }
        }
        FUZZ_CHECK(back.req_cons() == req_cons);
        FUZZ_CHECK(back.in_flight() <= size);
    }
    std::free(mem);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in{data, size};
    const std::uint8_t sel = in.u8();
    const unsigned pages = 1 + (sel >> 4) % 4;
    switch (sel % 4) {
        case 0:
            run<BlkifProtocol>(in, pages);
            break;
        case 1:
            run<BlkifX86_32Protocol>(in, pages);
            break;
        case 2:
            run<NetifTxProtocol>(in, 1);
            break;
        default:
            run<NetifCtrlProtocol>(in, 1);
            break;
    }
    return 0;
}
