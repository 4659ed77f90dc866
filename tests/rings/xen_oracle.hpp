// The run-time half of the oracle: what a static_assert cannot check (Xen's xsd_errors[] is a
// non-constexpr array; the ring macros' behaviour needs running). Sizes, offsets and constants
// are checked at compile time in abi_static_check.cpp. Test-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace hv::test::xen {

/// Xen's xsd_errors[] table, in order.
std::vector<std::pair<int, std::string>> xsd_errors();

/// Runs a fixed front/back conversation with Xen's ring macros on `mem` (a blkif ring of
/// mem.size() bytes, indices starting at `start`), `rounds[k]` requests per round. Returns
/// the log of every notify / final-check / count decision. ring_test.cpp runs the same
/// conversation with FrontRing/BackRing and compares the log and the final bytes.
std::vector<long long> blkif_conversation(std::span<std::byte> mem, std::uint32_t start,
                                          std::span<const unsigned> rounds);
std::vector<long long> netif_tx_conversation(std::span<std::byte> mem, std::uint32_t start,
                                             std::span<const unsigned> rounds);

}  // namespace hv::test::xen
