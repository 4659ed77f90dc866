// Console ring page (io/console.h, xen-abi.md §8): two byte rings. Layer: L0, header-only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hv::rings {

using XENCONS_RING_IDX = std::uint32_t;

inline constexpr std::uint8_t XENCONSOLE_CONNECTED = 0;
inline constexpr std::uint8_t XENCONSOLE_DISCONNECTED = 1;

struct xencons_interface {
    char in[1024];   // backend -> guest
    char out[2048];  // guest -> backend
    XENCONS_RING_IDX in_cons, in_prod;
    XENCONS_RING_IDX out_cons, out_prod;
    /// Newer Xen (after 4.17): backend sets XENCONSOLE_CONNECTED once it services the ring.
    std::uint8_t connection;
};
static_assert(sizeof(xencons_interface) == 3092);
static_assert(offsetof(xencons_interface, out) == 1024);
static_assert(offsetof(xencons_interface, in_cons) == 3072);
static_assert(offsetof(xencons_interface, in_prod) == 3076);
static_assert(offsetof(xencons_interface, out_cons) == 3080);
static_assert(offsetof(xencons_interface, out_prod) == 3084);
static_assert(offsetof(xencons_interface, connection) == 3088);

/// MASK_XENCONS_IDX: byte position of a free-running index in `in` or `out`.
template <std::size_t N>
constexpr std::size_t MASK_XENCONS_IDX(XENCONS_RING_IDX idx, const char (&)[N]) noexcept {
    static_assert((N & (N - 1)) == 0);
    return idx & (N - 1);
}

}  // namespace hv::rings
