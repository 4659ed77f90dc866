// XenStore wire protocol: the xsd_sockmsg header, message types, error names and limits.
// Layer: L1 (xenstore). Header-only, no syscalls. SPEC: xen/include/public/io/xs_wire.h,
// xen-abi.md §4.1–4.3. (Moves onto rings/protocols/xs_wire.hpp once that header exists.)
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hv::xs {

/// SPEC: xs_wire.h enum xsd_sockmsg_type. Values are the wire numbers.
enum class MsgType : std::uint32_t {
    XS_CONTROL = 0,  // alias XS_DEBUG
    XS_DIRECTORY = 1,
    XS_READ = 2,
    XS_GET_PERMS = 3,
    XS_WATCH = 4,
    XS_UNWATCH = 5,
    XS_TRANSACTION_START = 6,
    XS_TRANSACTION_END = 7,
    XS_INTRODUCE = 8,
    XS_RELEASE = 9,
    XS_GET_DOMAIN_PATH = 10,
    XS_WRITE = 11,
    XS_MKDIR = 12,
    XS_RM = 13,
    XS_SET_PERMS = 14,
    XS_WATCH_EVENT = 15,
    XS_ERROR = 16,
    XS_IS_DOMAIN_INTRODUCED = 17,
    XS_RESUME = 18,
    XS_SET_TARGET = 19,
    XS_RESTRICT = 20,  // removed from Xen; always ENOSYS
    XS_RESET_WATCHES = 21,
    XS_DIRECTORY_PART = 22,
    XS_GET_FEATURE = 23,
    XS_SET_FEATURE = 24,
    XS_GET_QUOTA = 25,
    XS_SET_QUOTA = 26,
    XS_TYPE_COUNT = 27,
    XS_INVALID = 0xffff,
};
inline constexpr MsgType XS_DEBUG = MsgType::XS_CONTROL;

/// SPEC: struct xsd_sockmsg — 16 bytes, host endian, followed by `len` payload bytes.
struct xsd_sockmsg {
    std::uint32_t type;
    std::uint32_t req_id;
    std::uint32_t tx_id;
    std::uint32_t len;
};
static_assert(sizeof(xsd_sockmsg) == 16);
static_assert(offsetof(xsd_sockmsg, type) == 0);
static_assert(offsetof(xsd_sockmsg, req_id) == 4);
static_assert(offsetof(xsd_sockmsg, tx_id) == 8);
static_assert(offsetof(xsd_sockmsg, len) == 12);

inline constexpr std::size_t XENSTORE_PAYLOAD_MAX = 4096;
inline constexpr std::size_t XENSTORE_ABS_PATH_MAX = 3072;
inline constexpr std::size_t XENSTORE_REL_PATH_MAX = 2048;

/// SPEC: xs_wire.h feature bits (server_features / GET_FEATURE).
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_ERROR = 2;
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_WATCHDEPTH = 4;
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_DOMID_ANY = 8;

/// First domid that is not a real domain (DOMID_FIRST_RESERVED).
inline constexpr unsigned DOMID_FIRST_RESERVED = 0x7ff0;

/// The errno values the protocol can carry, in xs_wire.h's xsd_errors[] order.
struct XsdError {
    int errnum;
    std::string_view name;
};
inline constexpr XsdError xsd_errors[] = {
    {EINVAL, "EINVAL"}, {EACCES, "EACCES"},   {EEXIST, "EEXIST"}, {EISDIR, "EISDIR"},
    {ENOENT, "ENOENT"},  {ENOMEM, "ENOMEM"},   {ENOSPC, "ENOSPC"}, {EIO, "EIO"},
    {ENOTEMPTY, "ENOTEMPTY"}, {ENOSYS, "ENOSYS"}, {EROFS, "EROFS"}, {EBUSY, "EBUSY"},
    {EAGAIN, "EAGAIN"}, {EISCONN, "EISCONN"}, {E2BIG, "E2BIG"},  {EPERM, "EPERM"},
};

/// The wire name of an errno; anything untranslatable is sent as EINVAL (as Xen does).
constexpr std::string_view xsd_error_name(int errnum) noexcept {
    for (const auto& e : xsd_errors) {
        if (e.errnum == errnum) {
            return e.name;
        }
    }
    return "EINVAL";
}

/// The errno for a wire error name (without the NUL); EINVAL for an unknown name.
constexpr int xsd_error_errno(std::string_view name) noexcept {
    for (const auto& e : xsd_errors) {
        if (e.name == name) {
            return e.errnum;
        }
    }
    return EINVAL;
}

}  // namespace hv::xs
