// Null engine: completes every request at submit() without touching data, so benchmarks see
// ring + hv-min overhead apart from storage (SP module/bdev/null). Layer: L3. Owner thread only.
#include "blkback/engine_common.hpp"

namespace hv::blk {

namespace {
class NullEngine final : public detail::ImmediateEngine {
public:
    NullEngine(EngineProperties p, UniqueFd ev) noexcept : ImmediateEngine(p, std::move(ev)) {}

private:
    void do_read(std::uint64_t, std::span<const iovec>) noexcept override {}
    void do_write(std::uint64_t, std::span<const iovec>) noexcept override {}
    void do_discard(std::uint64_t, std::uint64_t) noexcept override {}
};
}  // namespace

namespace detail {
hv::Result<EngineProperties> immediate_properties(std::uint64_t capacity_bytes,
                                                  const MemoryEngineOptions& opt) noexcept {
    if ((opt.logical_block_size != 512 && opt.logical_block_size != 4096) ||
        opt.queue_depth == 0 || opt.queue_depth > 65536 || opt.max_segments == 0 ||
        opt.max_segments > 4096 || capacity_bytes % opt.logical_block_size != 0) {
        return hv::fail(Errc::invalid_argument);
    }
    EngineProperties p;
    p.capacity_bytes = capacity_bytes;
    p.logical_block_size = opt.logical_block_size;
    p.physical_block_size = opt.logical_block_size;
    p.read_only = opt.read_only;
    p.discard = true;
    p.discard_granularity = opt.logical_block_size;
    p.queue_depth = opt.queue_depth;
    p.max_segments = opt.max_segments;
    return p;
}
}  // namespace detail

hv::Result<std::unique_ptr<BlockEngine>> make_null_engine(std::uint64_t capacity_bytes,
                                                          const MemoryEngineOptions& opt) noexcept {
    auto props = detail::immediate_properties(capacity_bytes, opt);
    if (!props) {
        return hv::unexpected(props.error());
    }
    auto ev = detail::make_event_fd();
    if (!ev) {
        return hv::unexpected(ev.error());
    }
    return std::unique_ptr<BlockEngine>(new NullEngine(*props, std::move(*ev)));
}

}  // namespace hv::blk
