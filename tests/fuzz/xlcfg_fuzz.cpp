// libFuzzer target for tools/xlcfg: first byte picks the parser, the rest is its input.
// Invariants checked beyond "no crash": results are self-consistent and error messages are
// non-empty and free of raw control characters.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "xlcfg.hpp"

using namespace hv::tools;

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

void check_message(const std::string& m) {
    check(!m.empty());
    for (char c : m) {
        check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    switch (data[0] % 6) {
        case 0: {
            auto r = parse_domain_config(in, "fuzz.cfg");
            if (r) {
                check(valid_domain_name(r->name));
                check(r->memory_mib >= 1 && r->maxmem_mib >= r->memory_mib);
                check(!r->kernel.empty());
            } else {
                check_message(r.error().message());
            }
            break;
        }
        case 1: {
            // Overrides: split the input at newlines into KEY=VALUE arguments.
            std::vector<std::string> args;
            std::string cur;
            for (char c : in) {
                if (c == '\n') {
                    args.push_back(cur);
                    cur.clear();
                } else {
                    cur.push_back(c);
                }
            }
            args.push_back(cur);
            auto r = parse_domain_config("name='f'\nmemory=1\nkernel='/k'\n", "fuzz.cfg", args);
            if (!r) {
                check_message(r.error().message());
            }
            break;
        }
        case 2: {
            auto r = parse_disk_spec(in);
            if (r) {
                auto n = vdev_to_number(r->vdev);
                check(n.has_value() && *n == r->virtual_device);
                check(r->is_cdrom || !r->target.empty());
            } else {
                check(!r.error().text.empty());
            }
            break;
        }
        case 3: {
            auto r = parse_vif_spec(in);
            if (r) {
                const std::string mac = r->mac_string();
                check(mac.empty() || mac.size() == 17);
            } else {
                check(!r.error().text.empty());
            }
            break;
        }
        case 4: {
            auto r = parse_pci_spec(in);
            if (r) {
                check(r->dev <= 0x1f && r->func <= 7);
                auto again = parse_pci_spec(r->bdf());
                check(again.has_value() && again->bdf() == r->bdf());
            }
            break;
        }
        default: {
            auto v = vdev_to_number(in);
            auto rate = parse_vif_rate(in);
            if (rate) {
                check(rate->interval_usecs > 0);
            }
            (void)v;
            break;
        }
    }
    return 0;
}
