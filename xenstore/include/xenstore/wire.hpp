// XenStore wire protocol: the xsd_sockmsg header, message types, error names and limits.
// Layer: L1 (xenstore). Header-only, no syscalls. SPEC: xen/include/public/io/xs_wire.h,
// xen-abi.md §4.1–4.3. The wire structs come from rings (hv/rings/protocols/xs_wire.hpp);
// this adds a typed MsgType for the dispatcher.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hv/rings/protocols/xs_wire.hpp"

namespace hv::xs {

/// SPEC: xs_wire.h enum xsd_sockmsg_type. Values are the wire numbers.
enum class MsgType : std::uint32_t {
    XS_CONTROL = hv::rings::XS_CONTROL,  // alias XS_DEBUG
    XS_DIRECTORY = hv::rings::XS_DIRECTORY,
    XS_READ = hv::rings::XS_READ,
    XS_GET_PERMS = hv::rings::XS_GET_PERMS,
    XS_WATCH = hv::rings::XS_WATCH,
    XS_UNWATCH = hv::rings::XS_UNWATCH,
    XS_TRANSACTION_START = hv::rings::XS_TRANSACTION_START,
    XS_TRANSACTION_END = hv::rings::XS_TRANSACTION_END,
    XS_INTRODUCE = hv::rings::XS_INTRODUCE,
    XS_RELEASE = hv::rings::XS_RELEASE,
    XS_GET_DOMAIN_PATH = hv::rings::XS_GET_DOMAIN_PATH,
    XS_WRITE = hv::rings::XS_WRITE,
    XS_MKDIR = hv::rings::XS_MKDIR,
    XS_RM = hv::rings::XS_RM,
    XS_SET_PERMS = hv::rings::XS_SET_PERMS,
    XS_WATCH_EVENT = hv::rings::XS_WATCH_EVENT,
    XS_ERROR = hv::rings::XS_ERROR,
    XS_IS_DOMAIN_INTRODUCED = hv::rings::XS_IS_DOMAIN_INTRODUCED,
    XS_RESUME = hv::rings::XS_RESUME,
    XS_SET_TARGET = hv::rings::XS_SET_TARGET,
    XS_RESTRICT = 20,  // removed from Xen; always ENOSYS
    XS_RESET_WATCHES = hv::rings::XS_RESET_WATCHES,
    XS_DIRECTORY_PART = hv::rings::XS_DIRECTORY_PART,
    XS_GET_FEATURE = hv::rings::XS_GET_FEATURE,
    XS_SET_FEATURE = hv::rings::XS_SET_FEATURE,
    XS_GET_QUOTA = hv::rings::XS_GET_QUOTA,
    XS_SET_QUOTA = hv::rings::XS_SET_QUOTA,
    XS_TYPE_COUNT = hv::rings::XS_TYPE_COUNT,
    XS_INVALID = hv::rings::XS_INVALID,
};
inline constexpr MsgType XS_DEBUG = MsgType::XS_CONTROL;

/// SPEC: struct xsd_sockmsg — 16 bytes, host endian, followed by `len` payload bytes.
using hv::rings::xsd_sockmsg;

inline constexpr std::size_t XENSTORE_PAYLOAD_MAX = hv::rings::XENSTORE_PAYLOAD_MAX;
inline constexpr std::size_t XENSTORE_ABS_PATH_MAX = hv::rings::XENSTORE_ABS_PATH_MAX;
inline constexpr std::size_t XENSTORE_REL_PATH_MAX = hv::rings::XENSTORE_REL_PATH_MAX;

using hv::rings::XENSTORE_SERVER_FEATURE_DOMID_ANY;
using hv::rings::XENSTORE_SERVER_FEATURE_ERROR;
using hv::rings::XENSTORE_SERVER_FEATURE_RECONNECTION;
using hv::rings::XENSTORE_SERVER_FEATURE_WATCHDEPTH;

/// First domid that is not a real domain (DOMID_FIRST_RESERVED).
inline constexpr unsigned DOMID_FIRST_RESERVED = 0x7ff0;

/// The wire name of an errno; anything untranslatable is sent as EINVAL (as Xen does).
constexpr std::string_view xsd_error_name(int errnum) noexcept {
    return hv::rings::xsd_error_name(errnum);
}

/// The errno for a wire error name (without the NUL); EINVAL for an unknown name.
constexpr int xsd_error_errno(std::string_view name) noexcept {
    return hv::rings::xsd_errno_from_name(name).value_or(EINVAL);
}

}  // namespace hv::xs
