// Google Benchmark micro-benchmarks of the ring templates (style.md §11): single thread, no
// notifications, so they measure the ring code itself (index checks, copies, fences).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>

#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/ring.hpp"

using namespace hv::rings;

namespace {

template <class P>
struct Ring {
    explicit Ring(unsigned pages) : bytes(std::size_t{pages} * XEN_PAGE_SIZE) {
        mem = static_cast<std::byte*>(std::aligned_alloc(XEN_PAGE_SIZE, bytes));
        std::memset(mem, 0, bytes);
        front = *FrontRing<P>::init({mem, bytes});
        back = *BackRing<P>::attach({mem, bytes});
    }
    ~Ring() { std::free(mem); }
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    std::size_t bytes;
    std::byte* mem;
    FrontRing<P> front;
    BackRing<P> back;
};

/// One request through the whole cycle: put, push, take, answer, push, take.
void bm_ring_push_pop(benchmark::State& state) {
    Ring<BlkifProtocol> r(1);
    blkif_request req{};
    req.operation = BLKIF_OP_READ;
    std::uint64_t id = 0;
    for (auto _ : state) {
        req.id = id++;
        r.front.put_request(req);
        benchmark::DoNotOptimize(r.front.push_requests());
        (void)r.back.unconsumed();
        auto got = r.back.take_request();
        blkif_response rsp{};
        rsp.id = got->id;
        r.back.put_response(rsp);
        benchmark::DoNotOptimize(r.back.push_responses());
        (void)r.front.unconsumed_responses();
        auto back_rsp = r.front.take_response();
        benchmark::DoNotOptimize(back_rsp);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_ring_push_pop);

/// A batch of N requests per push (N = ring size is a full ring), then N responses.
template <class P>
void bm_ring_push_pop_batch(benchmark::State& state) {
    Ring<P> r(1);
    const auto n = static_cast<unsigned>(state.range(0));
    typename P::request req{};
    for (auto _ : state) {
        for (unsigned i = 0; i < n; ++i) {
            r.front.put_request(req);
        }
        benchmark::DoNotOptimize(r.front.push_requests());
        (void)r.back.unconsumed();
        while (auto got = r.back.take_request()) {
            typename P::response rsp{};
            r.back.put_response(rsp);
        }
        benchmark::DoNotOptimize(r.back.push_responses());
        (void)r.front.unconsumed_responses();
        while (auto rsp = r.front.take_response()) {
            benchmark::DoNotOptimize(rsp);
        }
    }
    state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK_TEMPLATE(bm_ring_push_pop_batch, BlkifProtocol)->Arg(8)->Arg(32);
BENCHMARK_TEMPLATE(bm_ring_push_pop_batch, NetifTxProtocol)->Arg(32)->Arg(256);

/// The validated copy-out of one 112-byte blkif request (the double-fetch defence).
void bm_ring_take_request(benchmark::State& state) {
    Ring<BlkifProtocol> r(1);
    blkif_request req{};
    for (auto _ : state) {
        r.front.put_request(req);
        r.front.publish_requests();
        (void)r.back.unconsumed();
        auto got = r.back.take_request();
        benchmark::DoNotOptimize(got);
        r.back.put_response(blkif_response{});
        r.back.publish_responses();
        (void)r.front.unconsumed_responses();
        (void)r.front.take_response();
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(bm_ring_take_request);

/// The consumer's final check on an empty ring: event store + full fence + re-read.
void bm_ring_final_check(benchmark::State& state) {
    Ring<BlkifProtocol> r(1);
    for (auto _ : state) {
        auto more = r.back.final_check_for_requests();
        benchmark::DoNotOptimize(more);
    }
}
BENCHMARK(bm_ring_final_check);

}  // namespace

BENCHMARK_MAIN();
