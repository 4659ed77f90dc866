// netif control requests and the Toeplitz hash (ctrl.hpp). Layer: L2.
#include "netback/ctrl.hpp"

#include <algorithm>
#include <cstring>

#include "hv/rings/xen/grant_table.hpp"

namespace hv::net {

namespace w = hv::rings;

std::uint32_t toeplitz_hash(std::span<const std::uint8_t> key,
                            std::span<const std::uint8_t> input) noexcept {
    auto key_byte = [&](std::size_t i) -> std::uint32_t { return i < key.size() ? key[i] : 0U; };
    // The 32 key bits aligned with the current input bit, refilled one key bit per input bit.
    std::uint32_t window = key_byte(0) << 24 | key_byte(1) << 16 | key_byte(2) << 8 | key_byte(3);
    std::uint32_t hash = 0;
    for (std::size_t i = 0; i < input.size(); ++i) {
        const std::uint32_t next = key_byte(i + 4);
        for (int b = 7; b >= 0; --b) {
            if ((input[i] >> b) & 1U) {
                hash ^= window;
            }
            window = window << 1 | ((next >> b) & 1U);
        }
    }
    return hash;
}

std::uint32_t CtrlHandler::set_key(std::uint32_t gref, std::uint32_t len,
                                   const CtrlCopyFn& copy) noexcept {
    // SPEC: Linux xenvif_set_hash_key: at most 40 bytes; the rest of the key is zeroed.
    if (len > HashSettings::kMaxKey) {
        return w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    std::array<std::uint8_t, HashSettings::kMaxKey> key{};
    if (len != 0 &&
        copy(gref, std::as_writable_bytes(std::span(key).first(len))) != w::GNTST_okay) {
        return w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    s_.key = key;
    return w::XEN_NETIF_CTRL_STATUS_SUCCESS;
}

std::uint32_t CtrlHandler::set_mapping(std::uint32_t gref, std::uint32_t len, std::uint32_t off,
                                       const CtrlCopyFn& copy) noexcept {
    // SPEC: Linux xenvif_set_hash_mapping: `len` entries from offset 0 of the grant go to
    // [off, off + len) of the table, inside its size; every entry names a queue; a failure
    // leaves the table as it was.
    if (off + len < off || off + len > s_.mapping_size ||
        len > w::XEN_PAGE_SIZE / sizeof(std::uint32_t)) {
        return w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    std::array<std::uint32_t, HashSettings::kMaxMapping> next = s_.mapping;
    if (len != 0 &&
        copy(gref, std::as_writable_bytes(std::span(next).subspan(off, len))) != w::GNTST_okay) {
        return w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    for (std::uint32_t i = off; i < off + len; ++i) {
        if (next[i] >= queues_) {
            return w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
        }
    }
    s_.mapping = next;
    return w::XEN_NETIF_CTRL_STATUS_SUCCESS;
}

w::xen_netif_ctrl_response CtrlHandler::handle(const w::xen_netif_ctrl_request& req,
                                               const CtrlCopyFn& copy) noexcept {
    w::xen_netif_ctrl_response rsp{};
    rsp.id = req.id;
    rsp.type = req.type;
    rsp.status = w::XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;
    rsp.data = 0;
    switch (req.type) {
        case w::XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM:
            if (req.data[0] == w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE ||
                req.data[0] == w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ) {
                s_.algorithm = req.data[0];
                rsp.status = w::XEN_NETIF_CTRL_STATUS_SUCCESS;
            } else {
                rsp.status = w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
            }
            break;
        case w::XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS:
            if (s_.algorithm != w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE) {
                rsp.status = w::XEN_NETIF_CTRL_STATUS_SUCCESS;
                rsp.data = HashSettings::kAllTypes;
            }
            break;
        case w::XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS:
            if ((req.data[0] & ~HashSettings::kAllTypes) != 0 ||
                s_.algorithm == w::XEN_NETIF_CTRL_HASH_ALGORITHM_NONE) {
                rsp.status = w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
            } else {
                s_.flags = req.data[0];
                rsp.status = w::XEN_NETIF_CTRL_STATUS_SUCCESS;
            }
            break;
        case w::XEN_NETIF_CTRL_TYPE_SET_HASH_KEY:
            rsp.status = set_key(req.data[0], req.data[1], copy);
            break;
        case w::XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE:
            rsp.status = w::XEN_NETIF_CTRL_STATUS_SUCCESS;
            rsp.data = HashSettings::kMaxMapping;
            break;
        case w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE:
            if (req.data[0] > HashSettings::kMaxMapping) {
                rsp.status = w::XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
            } else {
                s_.mapping_size = req.data[0];
                s_.mapping.fill(0);
                rsp.status = w::XEN_NETIF_CTRL_STATUS_SUCCESS;
            }
            break;
        case w::XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING:
            rsp.status = set_mapping(req.data[0], req.data[1], req.data[2], copy);
            break;
        default:  // INVALID, the gref-mapping types (not implemented), anything unknown
            break;
    }
    return rsp;
}

}  // namespace hv::net
