// Memory engine: a RAM-backed disk (anonymous mapping) that completes at submit(). For tests
// and benchmarks that need real data without storage. Layer: L3. Owner thread only.
#include <cstring>

#include "blkback/engine_common.hpp"
#include "hv/mapping.hpp"

namespace hv::blk {

namespace {
class MemoryEngine final : public detail::ImmediateEngine {
public:
    MemoryEngine(EngineProperties p, UniqueFd ev, Mapping mem) noexcept
        : ImmediateEngine(p, std::move(ev)), mem_(std::move(mem)) {}

private:
    void do_read(std::uint64_t off, std::span<const iovec> iov) noexcept override {
        for (const iovec& v : iov) {
            std::memcpy(v.iov_base, mem_.data() + off, v.iov_len);
            off += v.iov_len;
        }
    }
    void do_write(std::uint64_t off, std::span<const iovec> iov) noexcept override {
        for (const iovec& v : iov) {
            std::memcpy(mem_.data() + off, v.iov_base, v.iov_len);
            off += v.iov_len;
        }
    }
    void do_discard(std::uint64_t off, std::uint64_t len) noexcept override {
        std::memset(mem_.data() + off, 0, len);
    }
    Mapping mem_;
};
}  // namespace

hv::Result<std::unique_ptr<BlockEngine>> make_memory_engine(
    std::uint64_t capacity_bytes, const MemoryEngineOptions& opt) noexcept {
    auto props = detail::immediate_properties(capacity_bytes, opt);
    if (!props) {
        return hv::unexpected(props.error());
    }
    props->discard_zeroes = true;
    auto mem = Mapping::anonymous(capacity_bytes == 0 ? 1 : capacity_bytes);
    if (!mem) {
        return hv::unexpected(mem.error());
    }
    auto ev = detail::make_event_fd();
    if (!ev) {
        return hv::unexpected(ev.error());
    }
    return std::unique_ptr<BlockEngine>(new MemoryEngine(*props, std::move(*ev), std::move(*mem)));
}

}  // namespace hv::blk
