// XenbusState (io/xenbus.h, xen-abi.md §4.11) with Xen's names, and its text form in `state`
// nodes. Layer: L0, header-only.
#pragma once

#include <charconv>
#include <string_view>

namespace hv::rings {

/// Unscoped on purpose: the enumerators keep Xen's exact names (greppable against the spec).
enum XenbusState : int {
    XenbusStateUnknown = 0,
    XenbusStateInitialising = 1,
    XenbusStateInitWait = 2,
    XenbusStateInitialised = 3,
    XenbusStateConnected = 4,
    XenbusStateClosing = 5,
    XenbusStateClosed = 6,
    XenbusStateReconfiguring = 7,
    XenbusStateReconfigured = 8,
};

constexpr std::string_view to_string(XenbusState s) noexcept {
    switch (s) {
        case XenbusStateUnknown:
            return "Unknown";
        case XenbusStateInitialising:
            return "Initialising";
        case XenbusStateInitWait:
            return "InitWait";
        case XenbusStateInitialised:
            return "Initialised";
        case XenbusStateConnected:
            return "Connected";
        case XenbusStateClosing:
            return "Closing";
        case XenbusStateClosed:
            return "Closed";
        case XenbusStateReconfiguring:
            return "Reconfiguring";
        case XenbusStateReconfigured:
            return "Reconfigured";
    }
    return "Invalid";
}

/// Reads a `state` node's value (decimal). Missing, unparseable or out-of-range text reads as
/// XenbusStateUnknown, as Linux's xenbus_read_driver_state() does.
/// GUEST: `text` may come from a hostile peer's node; every input maps to a valid state.
inline XenbusState parse_xenbus_state(std::string_view text) noexcept {
    int v = 0;
    const char* first = text.data();
    const char* last = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(first, last, v);
    if (text.empty() || ec != std::errc{} || ptr != last || v < 0 || v > 8) {
        return XenbusStateUnknown;
    }
    return static_cast<XenbusState>(v);
}

}  // namespace hv::rings
