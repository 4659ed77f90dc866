// libFuzzer target for hvctl's PCI address spellings (tools/hvctl/pci_addr.hpp). Beyond "no
// crash": a value that parses is exactly the canonical spelling of what it parsed to (so
// nothing a backend writes beyond an address can reach hvctl's output), fields are in range,
// and BDF argument errors are printable.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pci_addr.hpp"

using namespace hv::tools;

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

void check_range(const PciAddr& a) {
    check(a.dev <= 0x1f && a.func <= 7);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    if (auto a = parse_bdf_key(in)) {
        check_range(*a);
        check(to_string(*a) == in);
    }
    if (auto a = parse_registry_name(in)) {
        check_range(*a);
        check(registry_name(*a) == in);
        check(parse_bdf_key(to_string(*a)) == a);
    }
    if (auto a = parse_vdev_key(in)) {
        check_range(*a);
        char buf[16];
        std::snprintf(buf, sizeof buf, "%04x:%02x:%02x.%02x", a->domain, a->bus, a->dev, a->func);
        check(std::string_view(buf) == in);
    }
    auto arg = parse_bdf_arg(in);
    if (arg) {
        check_range(*arg);
        check(parse_bdf_key(to_string(*arg)) == *arg);
    } else {
        check(!arg.error().empty());
    }
    return 0;
}
