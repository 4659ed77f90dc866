// Strong integer ids (style.md §7): DomId, GrantRef, EvtchnPort cannot be mixed up.
// Layer: common. Header-only.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace hv {

template <class Tag, class Rep>
struct Strong {
    Rep value{};
    constexpr Strong() = default;
    constexpr explicit Strong(Rep v) : value(v) {}
    constexpr Rep get() const noexcept { return value; }
    friend constexpr auto operator<=>(const Strong&, const Strong&) = default;
};

using DomId = Strong<struct DomIdTag, std::uint16_t>;
using GrantRef = Strong<struct GrantRefTag, std::uint32_t>;
using EvtchnPort = Strong<struct EvtchnPortTag, std::uint32_t>;

}  // namespace hv

template <class Tag, class Rep>
struct std::hash<hv::Strong<Tag, Rep>> {
    std::size_t operator()(const hv::Strong<Tag, Rep>& s) const noexcept {
        return std::hash<Rep>{}(s.value);
    }
};
