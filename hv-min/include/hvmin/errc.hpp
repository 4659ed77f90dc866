// Error codes of hv-min's client library (style.md §5): hvmin::Errc, and GNTST_* statuses as
// std::error_code. Layer: hv-min (L1). Any thread.
#pragma once

#include <cstdint>
#include <system_error>

namespace hv::hvmin {

enum class Errc {
    protocol = 1,      ///< hv-min sent a reply that does not fit the request
    timed_out,         ///< no reply within the call's timeout
    grant_in_use,      ///< end_access on an entry still mapped or being copied (GTF_reading/writing)
    grant_table_full,  ///< no free grant reference
    bad_frame,         ///< frame number outside this domain's memory
    not_attached,      ///< HV_HYPERCALL_FD missing or not a hypercall socket
    disconnected,      ///< hv-min closed the connection
};

const std::error_category& category() noexcept;
inline std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), category()}; }

/// The category of GNTST_* values (value = -status, so GNTST_okay is "no error").
const std::error_category& gntst_category() noexcept;
inline std::error_code gntst_error(std::int16_t status) noexcept {
    return {-static_cast<int>(status), gntst_category()};
}

}  // namespace hv::hvmin

template <>
struct std::is_error_code_enum<hv::hvmin::Errc> : std::true_type {};
