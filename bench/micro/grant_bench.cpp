// Google Benchmark micro-benchmark of GNTTABOP_copy through the real in-process hv-min (one
// dom0 connection copies from 64 pages it granted to itself into 64 pages of its own extent).
// The wall-clock figures belong to hvbench (`grant`, beside memcpy); this exists so the copy
// path's cost per op can be counted in instructions, which load does not change:
//   valgrind --tool=callgrind build/bin/hv_micro_bench --benchmark_filter=bm_grant_copy
// then divide Core::Impl::op_copy's inclusive Ir by its calls × the batch size.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hv/rings/xen/grant_table.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hvmin/client.hpp"
#include "hvmin/core.hpp"

namespace {

constexpr std::uint32_t kPages = 64;
constexpr std::uint32_t kPageBytes = 4096;

struct SelfCopy {
    std::filesystem::path dir;
    std::unique_ptr<hv::hvmin::Core> core;
    std::optional<hv::hvmin::Services> dom0;
    std::vector<hv::rings::grant_ref_t> refs;
    std::uint64_t dest = 0;

    bool setup() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "hvmicro.XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) {
            return false;
        }
        dir = tmpl;
        hv::hvmin::CoreConfig cfg;
        cfg.rundir = dir;
        cfg.dom0_uid = ::getuid();
        cfg.host_xenstore = false;
        cfg.spin_window = std::chrono::microseconds{0};
        auto c = hv::hvmin::Core::create(cfg);
        if (!c || !(*c)->start()) {
            return false;
        }
        core = std::move(*c);
        auto s = hv::hvmin::connect_dom0(dir);
        if (!s) {
            return false;
        }
        dom0.emplace(std::move(*s));
        auto src = dom0->memory().alloc_extent(kPages);
        auto dst = dom0->memory().alloc_extent(kPages);
        if (!src || !dst) {
            return false;
        }
        dest = *dst;
        for (std::uint32_t i = 0; i < kPages; ++i) {
            auto ref = dom0->grants().grant_access(hv::DomId(0), *src + i, true);
            if (!ref) {
                return false;
            }
            refs.push_back(ref->get());
        }
        return true;
    }
    ~SelfCopy() {
        dom0.reset();
        core.reset();
        if (!dir.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    }
};

/// Batches of state.range(0) 4 KiB copies, one hypercall each.
void bm_grant_copy(benchmark::State& state) {
    SelfCopy h;
    if (!h.setup()) {
        state.SkipWithError("cannot start an in-process hv-min");
        return;
    }
    const auto batch = static_cast<std::uint32_t>(state.range(0));
    std::vector<hv::rings::gnttab_copy> ops(batch);
    std::uint64_t next = 0;
    for (auto _ : state) {
        for (auto& op : ops) {
            const std::uint64_t i = next++ % kPages;
            op = hv::rings::gnttab_copy{};
            op.source.u.ref = h.refs[i];
            op.source.domid = hv::rings::DOMID_SELF;
            op.dest.u.gmfn = h.dest + i;
            op.dest.domid = hv::rings::DOMID_SELF;
            op.len = kPageBytes;
            op.flags = hv::rings::GNTCOPY_source_gref;
        }
        if (!h.dom0->grants().copy(ops)) {
            state.SkipWithError("copy hypercall failed");
            return;
        }
        for (const auto& op : ops) {
            if (op.status != hv::rings::GNTST_okay) {
                state.SkipWithError("copy status not okay");
                return;
            }
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * batch * kPageBytes);
}
BENCHMARK(bm_grant_copy)->Arg(1)->Arg(16)->Arg(64);

}  // namespace
