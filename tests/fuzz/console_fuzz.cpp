// fuzz_console: hv-min's console ring consumer (console::BackEnd) against a guest that writes
// arbitrary indices and bytes into the shared page between the backend's steps.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "console_ring.hpp"

using namespace hv::hvmin;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    hv::rings::xencons_interface intf{};
    std::size_t i = 0;
    auto take32 = [&](std::uint32_t& v) {
        if (i + 4 <= size) {
            std::memcpy(&v, data + i, 4);
            i += 4;
        }
    };
    take32(intf.out_cons);
    take32(intf.in_prod);
    console::BackEnd be(&intf);
    bool halted = false;
    while (i < size && !halted) {
        const std::uint8_t op = data[i++];
        switch (op % 4) {
        case 0:  // the guest moves out_prod anywhere
            take32(intf.out_prod);
            break;
        case 1:  // the guest moves in_cons anywhere
            take32(intf.in_cons);
            break;
        case 2: {  // the backend drains output
            char buf[console::kOutSize];
            const long n = be.take_output(buf);
            if (n < 0) {
                halted = true;  // hv-min disconnects the console here
            } else if (static_cast<std::size_t>(n) > console::kOutSize) {
                std::abort();
            }
            break;
        }
        case 3: {  // the backend feeds input
            const std::size_t len = (i < size ? data[i++] : 0) * 8u;
            char in[2048] = {};
            const long n = be.put_input({in, len});
            if (n < 0) {
                halted = true;
            } else if (static_cast<std::size_t>(n) > console::kInSize ||
                       static_cast<std::size_t>(n) > len) {
                std::abort();
            }
            break;
        }
        }
    }
    return 0;
}
