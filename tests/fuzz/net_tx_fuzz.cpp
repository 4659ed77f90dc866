// libFuzzer: arbitrary bytes as a tx ring's unconsumed slots, drained packet by packet the way a
// worker would; plus rx planning from the same bytes. Any invariant break aborts.
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <vector>

#include "netback/tx_parse.hpp"

using namespace hv::net;
namespace w = hv::rings;

namespace {
void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    TxConfig cfg;
    cfg.gso_tcpv4 = (data[0] & 1) != 0;
    cfg.gso_tcpv6 = (data[0] & 2) != 0;
    cfg.max_slots = data[1] % 32;
    cfg.fatal_slots = static_cast<unsigned>(data[0] >> 2);
    data += 2;
    size -= 2;

    std::vector<w::netif_tx_request> slots(size / sizeof(w::netif_tx_request));
    if (!slots.empty()) {
        std::memcpy(slots.data(), data, slots.size() * sizeof(w::netif_tx_request));
    }
    std::size_t cons = 0;
    std::vector<w::netif_tx_response> rsp;
    while (cons < slots.size()) {
        const std::span<const w::netif_tx_request> left(slots.data() + cons, slots.size() - cons);
        const TxPacket p = parse_tx(left, cfg);
        check(p.slots_consumed <= left.size());
        check(p.nr_frags <= p.frags.size());
        if (p.verdict == TxVerdict::fatal || p.verdict == TxVerdict::none) {
            check(p.slots_consumed == 0);
            break;
        }
        check(p.slots_consumed >= 1);
        if (p.verdict == TxVerdict::forward) {
            unsigned sum = 0;
            for (unsigned i = 0; i < p.nr_frags; ++i) {
                check(unsigned{p.frags[i].offset} + p.frags[i].size <= 4096);
                sum += p.frags[i].size;
            }
            check(sum == p.total_size);
            check(p.frags[0].size >= eth_header_bytes);
            check(p.gso_type == w::XEN_NETIF_GSO_TYPE_NONE || p.gso_size > 0);
        }
        if (p.verdict == TxVerdict::forward) {
            // The same bytes as the packet's headers: the offload mapping must stay in bounds.
            std::vector<std::uint8_t> head(data, data + std::min<std::size_t>(size, 256));
            auto h = tx_offload_header(p, head, p.total_size);
            if (h && (h->flags & VnetHdr::F_NEEDS_CSUM) != 0) {
                check(std::size_t{h->csum_start} + h->csum_offset + 2 <= head.size());
                check(h->gso_type == VnetHdr::GSO_NONE || h->hdr_len <= head.size());
            }
        }
        rsp.assign(p.slots_consumed, {});
        check(build_tx_responses(p, to_netif_status(p.verdict, p.error), rsp) ==
              p.slots_consumed);
        cons += p.slots_consumed;
    }

    // Rx: the same bytes as a packet description and posted rx requests.
    if (size >= 8) {
        RxPacketInfo info;
        info.len = static_cast<std::size_t>(data[0] | data[1] << 8 | (data[2] & 1) << 16);
        info.csum_blank = (data[3] & 1) != 0;
        info.data_validated = (data[3] & 2) != 0;
        info.gso_type = data[4] % 4;
        info.gso_size = static_cast<std::uint16_t>(data[5] | data[6] << 8);
        info.has_hash = (data[3] & 4) != 0;
        RxFrontend fe;
        fe.sg = (data[7] & 1) != 0;
        fe.gso_tcpv4 = (data[7] & 2) != 0;
        fe.gso_tcpv6 = (data[7] & 4) != 0;
        fe.max_slots = (data[7] >> 3) + 1u;
        std::vector<w::netif_rx_request> reqs((data[3] >> 3) % 24);
        std::vector<RxSlot> out(reqs.size());
        auto n = build_rx_slots(info, fe, reqs, out);
        if (n) {
            check(*n <= reqs.size());
            std::size_t sum = 0;
            for (unsigned i = 0; i < *n; ++i) {
                if (!out[i].extra) {
                    check(out[i].rsp.status >= 0 && out[i].rsp.status <= 4096);
                    sum += static_cast<std::size_t>(out[i].rsp.status);
                }
            }
            check(sum == info.len);
        }
    }
    return 0;
}
