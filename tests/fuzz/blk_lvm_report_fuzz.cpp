// libFuzzer target for blkback's LVM report parser: input is "<lvs json>\0<pvs json>".
// Reports come from LVM metadata on disks we may not control; the parser must not trust them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "blkback/lvm.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const std::size_t cut = in.find('\0');
    const std::string_view lvs = in.substr(0, cut);
    const std::string_view pvs = cut == std::string_view::npos ? std::string_view{} : in.substr(cut + 1);
    auto v = hv::blk::lvm_parse_reports("vg0", "data", lvs, pvs);
    if (v) {
        std::uint64_t pos = 0;
        for (const auto& s : v->segments) {
            if (s.start_bytes != pos || s.areas.empty()) {
                std::abort();
            }
            pos += s.size_bytes;
        }
        if (pos != v->size_bytes) {
            std::abort();
        }
    }
    return 0;
}
