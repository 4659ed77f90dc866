// libFuzzer target: arbitrary client bytes into an NBD Session over a memory export.
// Byte 0 picks the chunk size and whether completions are deferred (released every few
// chunks, or after the session is gone), byte 1 the export's features.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "frontends/nbd.hpp"
#include "memory_export.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    const std::size_t chunk = 1 + (data[0] & 0x3F);
    const bool defer = (data[0] & 0x40) != 0;
    const bool drop_early = (data[0] & 0x80) != 0;
    hv::nbd::ExportInfo f;
    f.read_only = (data[1] & 1) != 0;
    f.flush = (data[1] & 2) != 0;
    f.trim = (data[1] & 4) != 0;
    f.min_block = (data[1] & 8) != 0 ? 4096 : 512;
    auto exp = std::make_shared<hv::test::MemoryExport>("xvda", 1 << 16, f);
    exp->defer = defer;
    exp->fail_with = (data[1] & 16) != 0 ? hv::nbd::NBD_EIO : 0;
    auto s = hv::nbd::Session::create({exp});
    const auto* bytes = reinterpret_cast<const std::byte*>(data + 2);
    std::size_t left = size - 2;
    unsigned n = 0;
    while (left > 0 && !s->closed()) {
        const std::size_t k = left < chunk ? left : chunk;
        s->feed(std::span<const std::byte>(bytes, k));
        bytes += k;
        left -= k;
        s->consume_output(s->output().size() / 2 + 1);
        if (defer && (++n % 3) == 0 && !exp->deferred.empty()) {
            exp->release((n & 4) != 0);
            s->feed({});
        }
    }
    if (drop_early) {
        s.reset();  // completions after the session died
    }
    while (!exp->deferred.empty()) {
        exp->release();
    }
    return 0;
}
