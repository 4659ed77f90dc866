// Error codes of the ring layer (L0). Header-only; any thread.
#pragma once

#include <string>
#include <system_error>

namespace hv::rings {

enum class Errc : int {
    /// The memory given for a ring is not 1..16 whole 4 KiB pages, or is misaligned.
    bad_ring_size = 1,
    /// The peer published a producer index more than a ring's worth ahead of what we answered
    /// (RING_REQUEST_PROD_OVERFLOW / RING_RESPONSE_PROD_OVERFLOW): the peer is broken or hostile.
    producer_overflow,
    /// The peer moved its producer index backwards, behind what we already consumed.
    producer_regressed,
};

namespace detail {
class RingsCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "hv.rings"; }
    std::string message(int ev) const override {
        switch (static_cast<Errc>(ev)) {
            case Errc::bad_ring_size:
                return "ring memory is not 1..16 aligned 4 KiB pages";
            case Errc::producer_overflow:
                return "peer's producer index is beyond the ring (protocol violation)";
            case Errc::producer_regressed:
                return "peer's producer index went backwards (protocol violation)";
        }
        return "unknown hv.rings error";
    }
};
}  // namespace detail

inline const std::error_category& rings_category() noexcept {
    static const detail::RingsCategory cat;
    return cat;
}

inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), rings_category()};
}

}  // namespace hv::rings

template <>
struct std::is_error_code_enum<hv::rings::Errc> : std::true_type {};
