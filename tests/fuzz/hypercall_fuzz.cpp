// libFuzzer target for hv-min's hypercall transport: every input is first decoded directly,
// then sent as one datagram from a dom0 connection to a real in-process Core, which must
// answer it (error status or per-element statuses) and keep serving.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "hv/log.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"
#include "hvmin/wire.hpp"

namespace {

struct World {
    std::string dir;
    std::unique_ptr<hv::hvmin::Core> core;
    std::optional<hv::hvmin::Services> dom0;
};

World& world() {
    static World* w = [] {
        hv::log::set_threshold(hv::log::Level::error);
        auto* x = new World;
        char tmpl[] = "/tmp/hvmin-fuzz.XXXXXX";
        x->dir = ::mkdtemp(tmpl);
        static std::string dir_to_remove = x->dir;
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(dir_to_remove, ec);
        });
        hv::hvmin::CoreConfig cfg;
        cfg.rundir = x->dir;
        cfg.host_xenstore = false;
        x->core = std::move(*hv::hvmin::Core::create(cfg));
        if (!x->core->start()) {
            std::abort();
        }
        auto s = hv::hvmin::Services::connect_dom0(x->dir);
        if (!s) {
            std::abort();
        }
        x->dom0.emplace(std::move(*s));
        // Real grants for the dispatcher to chew on: dom0 grants a few of its frames to itself.
        auto f = x->dom0->memory().alloc_extent(4);
        if (f) {
            for (std::uint64_t i = 0; i < 4; ++i) {
                (void)x->dom0->grants().grant_access(hv::DomId(0), *f + i, i % 2 == 1);
            }
        }
        return x;
    }();
    return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace hv::hvmin;
    const std::span<const std::byte> msg(reinterpret_cast<const std::byte*>(data), size);
    wire::Decoded d{};
    wire::DecodeError e{};
    const bool ok = wire::decode(msg, d, e);
    if (ok && d.body.size() > msg.size()) {
        std::abort();
    }
    if (size == 0 || size > wire::kMaxMessage) {
        return 0;  // empty = EOF on SEQPACKET; oversize is dropped by the kernel path
    }
    if (ok) {
        // Toolstack ops would spawn programs or wait forever; extents would eat memory.
        switch (d.op) {
        case wire::Op::domain_create:
        case wire::Op::domain_wait:
        case wire::Op::mem_alloc_extent:
            return 0;
        default:
            break;
        }
    }
    World& w = world();
    auto r = w.dom0->channel().call_raw(msg, 5000);
    if (!r) {
        std::abort();  // hv-min did not answer, or dropped dom0
    }
    return 0;
}
