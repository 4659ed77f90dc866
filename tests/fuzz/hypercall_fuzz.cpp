// libFuzzer target for hv-min's hypercall transport: every input is first decoded directly,
// then sent as one datagram from a dom0 connection to a real in-process Core, which must
// answer it (error status or per-element statuses) and keep serving. Every input is also a
// hypercall page's contents (request line, then ops): read by wire::take_page_request, then
// posted in dom0's real page, which hv-min must answer too. Every fd a reply carries (event
// channel ports' sockets above all) is then abused as a hostile domain would: set blocking and
// filled, and kept, so later inputs that send to, raise or close those ports meet them so.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
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
    std::optional<hv::hvmin::Services> paged;  // a second dom0 connection with a page
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
        auto p = x->dom0->clone();
        if (!p || !p->channel().setup_page()) {
            std::abort();
        }
        x->paged.emplace(std::move(*p));
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

/// The input as a page: its first 64 bytes the request line (seq replaced by a new one), the
/// rest the ops. hv-min must publish a reply for it.
void post_in_page(World& w, std::span<const std::byte> in) {
    using namespace hv::hvmin;
    // The pure decoder first, on a private copy.
    static std::byte local[wire::kPageBytes];
    std::memset(local, 0, sizeof local);
    std::memcpy(local, in.data(), std::min(in.size(), sizeof(wire::PageRequest)));
    if (in.size() > sizeof(wire::PageRequest)) {
        const auto ops = in.subspan(sizeof(wire::PageRequest));
        std::memcpy(local + wire::kPageOpsOffset, ops.data(),
                    std::min<std::size_t>(ops.size(), wire::kPageBytes - wire::kPageOpsOffset));
    }
    static hv::rings::gnttab_copy out[wire::kPageMaxOps];
    wire::PageCall call;
    wire::DecodeError err{};
    const auto* h = reinterpret_cast<const wire::PageHeader*>(local);
    const wire::PageTake t = wire::take_page_request(local, h->req.seq + 1, call, out, err);
    if (t == wire::PageTake::none ||
        (t == wire::PageTake::request && call.count > wire::kPageMaxOps)) {
        std::abort();
    }
    // Then hv-min, through the real page.
    HypercallPage* page = w.paged->channel().page();
    wire::PageHeader* ph = page->header();
    static std::uint32_t seq = 0;
    std::memcpy(page->data() + wire::kPageOpsOffset, local + wire::kPageOpsOffset,
                wire::kPageBytes - wire::kPageOpsOffset);
    wire::PageRequest req;
    std::memcpy(&req, local, sizeof req);
    ph->req.op = req.op;
    ph->req.flags = req.flags;
    ph->req.count = req.count;
    std::atomic_ref(ph->req.seq).store(++seq, std::memory_order_release);
    page->ring();
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::atomic_ref(ph->rsp.seq).load(std::memory_order_acquire) != seq) {
        if (std::chrono::steady_clock::now() > end) {
            std::abort();  // hv-min did not answer the page
        }
    }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace hv::hvmin;
    const std::span<const std::byte> msg(reinterpret_cast<const std::byte*>(data), size);
    wire::Decoded d{};
    wire::DecodeError e{};
    const bool ok = wire::decode(msg, d, e);
    if (ok && d.body.size() > msg.size()) {
        std::abort();
    }
    post_in_page(world(), msg);
    if (size == 0 || size > wire::kMaxMessage) {
        return 0;  // empty = EOF on SEQPACKET; oversize is dropped by the kernel path
    }
    if (ok) {
        // Toolstack ops would spawn programs or wait forever; extents would eat memory. A page
        // is set up once per connection (-EEXIST after); the page itself is fuzzed through the
        // `paged` connection.
        switch (d.op) {
        case wire::Op::domain_create:
        case wire::Op::domain_wait:
        case wire::Op::mem_alloc_extent:
        case wire::Op::page_setup:
            return 0;
        default:
            break;
        }
    }
    World& w = world();
    auto r = w.dom0->channel().call_raw(msg, 5000);
    if (!r) {
        std::fprintf(stderr, "hypercall_fuzz: dom0's call failed: %s\n",
                     r.error().message().c_str());
        std::abort();  // hv-min did not answer, or dropped dom0
    }
    // What a domain may do to the descriptors it got: O_NONBLOCK cleared, 2^64-2 written until
    // full (an eventfd's saturation; a port's sender fills the peer's queue); a page (a
    // channel's shared words) shrunk if it can be, overwritten with ones and punched out. Kept
    // (bounded) so later inputs raise and close ports whose descriptors look like this.
    static std::deque<hv::UniqueFd> kept;
    for (auto& fd : r->fds) {
        (void)::ftruncate(fd.get(), 0);
        std::uint8_t ones[64];
        std::memset(ones, 0xff, sizeof ones);
        (void)::pwrite(fd.get(), ones, sizeof ones, 0);
        (void)::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 64, 64);
        const std::uint64_t big = 0xfffffffffffffffe;
        for (int i = 0; i < 64; ++i) {
            if (::send(fd.get(), &big, sizeof big, MSG_DONTWAIT | MSG_NOSIGNAL) <= 0) {
                break;
            }
        }
        (void)::fcntl(fd.get(), F_SETFL, 0);
        kept.push_back(std::move(fd));
        if (kept.size() > 256) {
            kept.pop_front();
        }
    }
    return 0;
}
