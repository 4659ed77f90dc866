// The oracle: Xen's own public headers (Debian libxen-dev), compiled in their own translation
// unit (xen_oracle.cpp) because their macros clash with our names. Test-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace hv::test::xen {

struct AbiRow {
    std::string name;  // "struct.field", "struct.sizeof", a constant's name, ...
    long long value;
};

/// Every row of abi_list.inc, evaluated against Xen's headers (x86_64).
std::vector<AbiRow> native_layout();
/// Every row of xen32_layout.c, evaluated by clang -m32 against Xen's headers (i386).
std::vector<AbiRow> x86_32_layout();
/// Xen's xsd_errors[] table, in order.
std::vector<std::pair<int, std::string>> xsd_errors();
/// XEN_IO_PROTO_ABI_* strings, in the order x86_32, x86_64, arm; then XEN_PCI_MAGIC.
std::vector<std::string> proto_strings();

/// Runs a fixed front/back conversation with Xen's ring macros on `mem` (a blkif ring of
/// mem.size() bytes, indices starting at `start`), `rounds[k]` requests per round. Returns
/// the log of every notify / final-check / count decision. ring_test.cpp runs the same
/// conversation with FrontRing/BackRing and compares the log and the final bytes.
std::vector<long long> blkif_conversation(std::span<std::byte> mem, std::uint32_t start,
                                          std::span<const unsigned> rounds);
std::vector<long long> netif_tx_conversation(std::span<std::byte> mem, std::uint32_t start,
                                             std::span<const unsigned> rounds);

}  // namespace hv::test::xen
