// libFuzzer target for hv-guest's /sys/bus/pci file contents (frontends/hv_guest/pci_sysfs.hpp)
// from a hostile backend: every config read and write that pcifront makes is answered from the
// input (a failure, or any value), so the probe, the text attributes, config and VPD reads see
// whatever a backend could answer. Beyond "no crash": the op count stays bounded, `resource` is
// exactly 7 well-formed lines, the config size is 256 or 4096, the VPD capability is an aligned
// offset in the capability area, reads never claim more bytes than asked, text files are one
// short line.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "pci_sysfs.hpp"

using namespace hv::guest::sysfs;

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

/// Answers each op from the input: 1 byte (0xff: the op fails), then for a read 4 bytes of
/// value (the value is masked to the access size, as pcifront's checked ops deliver it).
class Scripted final : public ConfigSpace {
public:
    Scripted(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
    std::optional<std::uint32_t> read(unsigned off, unsigned size) override {
        check(size == 1 || size == 2 || size == 4);
        check(off + size <= 4096);
        ++ops;
        if (take() == 0xff) {
            return std::nullopt;
        }
        std::uint32_t v = 0;
        for (unsigned i = 0; i < 4; ++i) {
            v |= static_cast<std::uint32_t>(take()) << (8 * i);
        }
        return size == 4 ? v : v & ((1U << (8 * size)) - 1);
    }
    bool write(unsigned off, unsigned size, std::uint32_t) override {
        check(size == 1 || size == 2 || size == 4);
        check(off + size <= 4096);
        ++ops;
        return take() != 0xff;
    }
    std::size_t ops = 0;

private:
    std::uint8_t take() { return pos_ < n_ ? d_[pos_++] : 0xff; }  // input over: ops fail
    const std::uint8_t* d_;
    std::size_t n_;
    std::size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 4) {
        return 0;
    }
    const unsigned mode = data[0] % 4;
    const unsigned off = (static_cast<unsigned>(data[1]) | (static_cast<unsigned>(data[2]) << 8));
    const unsigned len = 1 + data[3] % 64;
    Scripted cs(data + 4, size - 4);
    switch (mode) {
        case 0: {
            auto p = probe(cs);
            check(cs.ops <= 200);  // 6 BARs, ROM, a 48-entry capability walk
            if (p) {
                static const std::regex line("(0x[0-9a-f]{16} 0x[0-9a-f]{16} 0x[0-9a-f]{16}\n){7}");
                check(std::regex_match(p->resource, line));
                check(p->config_size == 256 || p->config_size == 4096);
                check(p->vpd_cap == 0 || (p->vpd_cap >= 0x40 && p->vpd_cap <= 0xfc &&
                                          p->vpd_cap % 4 == 0));
            }
            break;
        }
        case 1: {
            const auto f = static_cast<File>(off % static_cast<unsigned>(File::count));
            auto t = attribute(cs, f);
            check(cs.ops <= 3);
            if (t) {
                check(!t->empty() && t->size() < 64 && t->back() == '\n');
                check(t->find('\n') == t->size() - 1);
            }
            break;
        }
        case 2: {
            const unsigned o = off % 4096;
            std::vector<std::uint8_t> out(std::min(len, 4096 - o));
            const std::size_t got = config_read(cs, o, out);
            check(got <= out.size());
            check(cs.ops <= out.size());
            break;
        }
        case 3: {
            const unsigned cap = 0x40 + (data[3] & 0xbc);  // a capability offset as probe finds
            std::vector<std::uint8_t> out(len);
            const std::size_t got = vpd_read(cs, cap, off % kVpdSize, out);
            check(got <= out.size());
            check(cs.ops <= out.size() * (2 + 2 * kVpdPolls));
            break;
        }
    }
    return 0;
}
