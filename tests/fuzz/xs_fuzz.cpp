// libFuzzer target for the XenStore message parser and dispatcher: arbitrary bytes from a
// privileged and an unprivileged connection, fed in arbitrary chunks, through the real Core.
// Invariants: no crash, no sanitizer report, the store stays consistent, output is framed.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "hv/assert.hpp"
#include "hv/log.hpp"
#include "xenstore/core.hpp"
#include "xenstore/wire.hpp"

namespace {

/// Checks that queued output is a sequence of whole, bounded messages; then drops it in two
/// steps (the first ends inside a message when there are several), as a short send would.
void drain(hv::xs::Core& core, hv::xs::ConnId id) {
    std::string_view out = core.output(id);
    std::size_t off = 0;
    while (out.size() - off >= sizeof(hv::xs::xsd_sockmsg)) {
        hv::xs::xsd_sockmsg h;
        std::memcpy(&h, out.data() + off, sizeof h);
        HV_ASSERT(h.len <= hv::xs::XENSTORE_PAYLOAD_MAX);
        HV_ASSERT(out.size() - off >= sizeof h + h.len);
        off += sizeof h + h.len;
    }
    HV_ASSERT(off == out.size());
    const std::size_t all = out.size();
    core.consume_output(id, all / 2);
    core.consume_output(id, all - all / 2);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    hv::log::set_threshold(hv::log::Level::error);
    hv::xs::ServerConfig cfg;
    cfg.quotas.nodes = 50;
    cfg.quotas.watches = 20;
    cfg.quotas.outstanding = 3;  // small: chunks often hold more requests than that
    hv::xs::Core core(cfg);
    hv::xs::ConnId conns[2] = {core.connect(hv::DomId{0}), core.connect(hv::DomId{3})};
    (void)core.introduce_domain(hv::DomId{3});
    bool alive[2] = {true, true};
    std::size_t pos = 0;
    // Each chunk: one control byte (bit 0: which connection, bits 1-7: chunk length), then bytes.
    while (pos < size) {
        const std::uint8_t ctl = data[pos++];
        const int which = ctl & 1;
        std::size_t len = static_cast<std::size_t>(ctl >> 1) * 4 + 1;
        if (len > size - pos) {
            len = size - pos;
        }
        if (alive[which]) {
            auto r = core.feed(conns[which],
                               std::string_view(reinterpret_cast<const char*>(data + pos), len));
            if (!r) {
                core.disconnect(conns[which]);
                alive[which] = false;
            } else {
                drain(core, conns[which]);
            }
        }
        pos += len;
        for (int i = 0; i < 2; ++i) {
            if (alive[i]) {
                drain(core, conns[i]);
            }
        }
        for (auto id : core.take_doomed()) {
            core.disconnect(id);
            for (int i = 0; i < 2; ++i) {
                if (conns[i] == id) {
                    alive[i] = false;
                }
            }
        }
        (void)core.take_dirty();
        // Throttled connections whose output was drained handle what they had buffered.
        for (auto id : core.take_resumed()) {
            for (int i = 0; i < 2; ++i) {
                if (alive[i] && conns[i] == id) {
                    if (!core.feed(id, {})) {
                        core.disconnect(id);
                        alive[i] = false;
                    } else {
                        drain(core, id);
                    }
                }
            }
        }
        HV_ASSERT(core.check().has_value());
    }
    HV_ASSERT(core.check().has_value());
    return 0;
}
