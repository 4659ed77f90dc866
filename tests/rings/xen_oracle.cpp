// The oracle translation unit: includes only Xen's public headers (never ours) and exposes
// numbers and macro behaviour through xen_oracle.hpp. Test-only.
#include "xen_oracle.hpp"

#include <cerrno>
#include <cstring>

// Xen's ring.h expects the OS to supply barriers; a full barrier is correct for all three.
#define xen_mb() __sync_synchronize()
#define xen_rmb() __sync_synchronize()
#define xen_wmb() __sync_synchronize()
#define rmb() __sync_synchronize()
#include "conversation.hpp"
#include "xen_abi_oracle.hpp"

namespace hv::test::xen {

std::vector<std::pair<int, std::string>> xsd_errors() {
    std::vector<std::pair<int, std::string>> out;
    for (const auto& e : ::xsd_errors) {
        out.emplace_back(e.errnum, e.errstring);
    }
    return out;
}

namespace {

// One conversation, written with Xen's macros exactly as a C driver would.
template <class Sring, class Front, class Back, class Req, class Rsp, class Fill, class Answer>
std::vector<long long> conversation(std::span<std::byte> mem, std::uint32_t start,
                                    std::span<const unsigned> rounds, Fill fill, Answer answer) {
    std::vector<long long> log;
    auto* s = reinterpret_cast<Sring*>(mem.data());
    Front front;
    Back back;
    SHARED_RING_INIT(s);
    s->req_prod = s->rsp_prod = start;
    s->req_event = s->rsp_event = start + 1;
    FRONT_RING_ATTACH(&front, s, start, mem.size());
    BACK_RING_ATTACH(&back, s, start, mem.size());
    log.push_back(RING_SIZE(&front));
    std::uint32_t seq = 0;
    for (unsigned k = 0; k < rounds.size(); ++k) {
        for (unsigned j = 0; j < rounds[k] && !RING_FULL(&front); ++j) {
            Req r;
            fill(r, seq++);
            std::memcpy(RING_GET_REQUEST(&front, front.req_prod_pvt), &r, sizeof r);
            front.req_prod_pvt++;
        }
        int notify = 0;
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&front, notify);
        log.push_back(notify);

        // Back end: drain, answer, final check (some rounds skip it), push responses.
        int more = 0;
        long long taken = 0;
        do {
            RING_IDX rc = back.req_cons;
            RING_IDX rp = back.sring->req_prod;
            rmb();
            if (RING_REQUEST_PROD_OVERFLOW(&back, rp)) {
                log.push_back(-1);
                return log;
            }
            while (rc != rp && !RING_REQUEST_CONS_OVERFLOW(&back, rc)) {
                Req req;
                RING_COPY_REQUEST(&back, rc, &req);
                back.req_cons = ++rc;
                Rsp rsp;
                answer(rsp, req);
                std::memcpy(RING_GET_RESPONSE(&back, back.rsp_prod_pvt), &rsp, sizeof rsp);
                back.rsp_prod_pvt++;
                ++taken;
            }
            more = 0;
            if (conv::back_final_checks(k)) {
                RING_FINAL_CHECK_FOR_REQUESTS(&back, more);
            }
        } while (more);
        log.push_back(taken);
        RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&back, notify);
        log.push_back(notify);

        // Front end: take responses, final check (some rounds skip it).
        long long got = 0;
        long long sum = 0;
        do {
            RING_IDX rp = front.sring->rsp_prod;
            rmb();
            while (front.rsp_cons != rp) {
                Rsp rsp;
                RING_COPY_RESPONSE(&front, front.rsp_cons, &rsp);
                front.rsp_cons++;
                ++got;
                sum += static_cast<long long>(rsp.id % 1000) + rsp.status;
            }
            more = 0;
            if (conv::front_final_checks(k)) {
                RING_FINAL_CHECK_FOR_RESPONSES(&front, more);
            }
        } while (more);
        log.push_back(got);
        log.push_back(sum);
    }
    return log;
}

}  // namespace

std::vector<long long> blkif_conversation(std::span<std::byte> mem, std::uint32_t start,
                                          std::span<const unsigned> rounds) {
    return conversation<blkif_sring, blkif_front_ring, blkif_back_ring, blkif_request,
                        blkif_response>(
        mem, start, rounds,
        [](blkif_request& r, std::uint32_t i) { conv::fill_blkif_request(r, i); },
        [](blkif_response& rsp, const blkif_request& req) { conv::blkif_response_for(rsp, req); });
}

std::vector<long long> netif_tx_conversation(std::span<std::byte> mem, std::uint32_t start,
                                             std::span<const unsigned> rounds) {
    return conversation<netif_tx_sring, netif_tx_front_ring, netif_tx_back_ring, netif_tx_request,
                        netif_tx_response>(
        mem, start, rounds,
        [](netif_tx_request& r, std::uint32_t i) { conv::fill_netif_tx_request(r, i); },
        [](netif_tx_response& rsp, const netif_tx_request& req) {
            conv::netif_tx_response_for(rsp, req);
        });
}

}  // namespace hv::test::xen
