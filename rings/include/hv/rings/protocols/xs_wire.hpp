// XenStore wire protocol (io/xs_wire.h, xen-abi.md §4): message header, types, the error
// table, and the domain ring page. Layer: L0, header-only.
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace hv::rings {

/// Unscoped on purpose: Xen's names. Values are the wire `type` field.
enum xsd_sockmsg_type : std::uint32_t {
    XS_CONTROL = 0,
    XS_DEBUG = XS_CONTROL,
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
    // 20: XS_RESTRICT, removed
    XS_RESET_WATCHES = XS_SET_TARGET + 2,
    XS_DIRECTORY_PART = 22,
    XS_GET_FEATURE = 23,
    XS_SET_FEATURE = 24,
    XS_GET_QUOTA = 25,
    XS_SET_QUOTA = 26,
    XS_TYPE_COUNT = 27,
    XS_INVALID = 0xffff,
};

enum xs_watch_type : std::uint32_t { XS_WATCH_PATH = 0, XS_WATCH_TOKEN = 1 };

/// Message header; `len` payload bytes follow. Host endian.
struct xsd_sockmsg {
    std::uint32_t type;    // xsd_sockmsg_type
    std::uint32_t req_id;  // echoed in the reply
    std::uint32_t tx_id;   // 0 = no transaction
    std::uint32_t len;     // payload bytes, <= XENSTORE_PAYLOAD_MAX
};
static_assert(sizeof(xsd_sockmsg) == 16);
static_assert(offsetof(xsd_sockmsg, req_id) == 4);
static_assert(offsetof(xsd_sockmsg, tx_id) == 8);
static_assert(offsetof(xsd_sockmsg, len) == 12);

inline constexpr std::uint32_t XENSTORE_PAYLOAD_MAX = 4096;
inline constexpr std::uint32_t XENSTORE_ABS_PATH_MAX = 3072;
inline constexpr std::uint32_t XENSTORE_REL_PATH_MAX = 2048;

inline constexpr std::string_view XS_WRITE_NONE = "NONE";
inline constexpr std::string_view XS_WRITE_CREATE = "CREATE";
inline constexpr std::string_view XS_WRITE_CREATE_EXCL = "CREATE|EXCL";

struct xsd_errors {
    int errnum;
    std::string_view errstring;
};

/// Xen's table, in Xen's order (new entries only ever appended).
inline constexpr std::array<xsd_errors, 16> xsd_error_table{{
    {EINVAL, "EINVAL"},
    {EACCES, "EACCES"},
    {EEXIST, "EEXIST"},
    {EISDIR, "EISDIR"},
    {ENOENT, "ENOENT"},
    {ENOMEM, "ENOMEM"},
    {ENOSPC, "ENOSPC"},
    {EIO, "EIO"},
    {ENOTEMPTY, "ENOTEMPTY"},
    {ENOSYS, "ENOSYS"},
    {EROFS, "EROFS"},
    {EBUSY, "EBUSY"},
    {EAGAIN, "EAGAIN"},
    {EISCONN, "EISCONN"},
    {E2BIG, "E2BIG"},
    {EPERM, "EPERM"},
}};

/// Wire name for an errno; untranslatable errors are sent as "EINVAL" (xenstored does so).
constexpr std::string_view xsd_error_name(int errnum) noexcept {
    for (const auto& e : xsd_error_table) {
        if (e.errnum == errnum) {
            return e.errstring;
        }
    }
    return "EINVAL";
}

/// errno for a wire name (without the NUL); nullopt for names not in the table.
constexpr std::optional<int> xsd_errno_from_name(std::string_view name) noexcept {
    for (const auto& e : xsd_error_table) {
        if (e.errstring == name) {
            return e.errnum;
        }
    }
    return std::nullopt;
}

using XENSTORE_RING_IDX = std::uint32_t;
inline constexpr std::uint32_t XENSTORE_RING_SIZE = 1024;
constexpr std::uint32_t MASK_XENSTORE_IDX(XENSTORE_RING_IDX idx) noexcept {
    return idx & (XENSTORE_RING_SIZE - 1);
}

inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_ERROR = 2;
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_WATCHDEPTH = 4;
inline constexpr std::uint32_t XENSTORE_SERVER_FEATURE_DOMID_ANY = 8;

inline constexpr std::uint32_t XENSTORE_CONNECTED = 0;
inline constexpr std::uint32_t XENSTORE_RECONNECT = 1;

inline constexpr std::uint32_t XENSTORE_ERROR_NONE = 0;
inline constexpr std::uint32_t XENSTORE_ERROR_COMM = 1;
inline constexpr std::uint32_t XENSTORE_ERROR_RINGIDX = 2;
inline constexpr std::uint32_t XENSTORE_ERROR_PROTO = 3;

/// The domain's XenStore ring page (first 2080 bytes of a 4 KiB page).
struct xenstore_domain_interface {
    char req[XENSTORE_RING_SIZE];  // client -> server
    char rsp[XENSTORE_RING_SIZE];  // server -> client: replies and watch events
    XENSTORE_RING_IDX req_cons, req_prod;
    XENSTORE_RING_IDX rsp_cons, rsp_prod;
    std::uint32_t server_features;  // XENSTORE_SERVER_FEATURE_*: server sets, never clears
    std::uint32_t connection;       // XENSTORE_CONNECTED / _RECONNECT
    std::uint32_t error;            // XENSTORE_ERROR_*
    std::uint32_t evtchn_port;      // newer Xen (dom0less): port for xenstored if non-zero
};
static_assert(sizeof(xenstore_domain_interface) == 2080);
static_assert(offsetof(xenstore_domain_interface, rsp) == 1024);
static_assert(offsetof(xenstore_domain_interface, req_cons) == 2048);
static_assert(offsetof(xenstore_domain_interface, req_prod) == 2052);
static_assert(offsetof(xenstore_domain_interface, rsp_cons) == 2056);
static_assert(offsetof(xenstore_domain_interface, rsp_prod) == 2060);
static_assert(offsetof(xenstore_domain_interface, server_features) == 2064);
static_assert(offsetof(xenstore_domain_interface, connection) == 2068);
static_assert(offsetof(xenstore_domain_interface, error) == 2072);
static_assert(offsetof(xenstore_domain_interface, evtchn_port) == 2076);

}  // namespace hv::rings
