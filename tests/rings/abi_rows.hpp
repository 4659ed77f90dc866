// A compile-time table of named ABI numbers ("struct.field", "struct.sizeof", a constant's
// name...) and its lookup, shared by the Xen side (xen_abi_oracle.hpp) and ours
// (abi_static_check.cpp). Includes neither Xen's headers nor ours. Test-only.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace hv::test::abi {

struct Row {
    std::string_view name;
    long long value;
};

/// The value of `name` in `rows`; a missing name is not a constant expression (a compile error).
consteval long long value_of(std::span<const Row> rows, std::string_view name) {
    for (const auto& r : rows) {
        if (r.name == name) {
            return r.value;
        }
    }
    throw "ABI row missing from one side";
}

}  // namespace hv::test::abi
