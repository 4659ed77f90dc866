// Network interface wire format (io/netif.h, xen-abi.md §6): tx/rx/ctrl rings, extra info,
// flags. Includes Linux's XEN_NETIF_EXTRA_TYPE_XDP. Layer: L0, header-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hv/rings/ring.hpp"

namespace hv::rings {

inline constexpr unsigned XEN_NETIF_NR_SLOTS_MIN = 18;
inline constexpr unsigned XEN_NETIF_MAX_TX_SIZE = 0xFFFF;
inline constexpr unsigned XEN_NETIF_MAX_XDP_HEADROOM = 0x7FFF;

// SPEC: io/netif.h NETTXF_* (note: csum bits differ from NETRXF_*).
inline constexpr std::uint16_t NETTXF_csum_blank = 1U << 0;
inline constexpr std::uint16_t NETTXF_data_validated = 1U << 1;
inline constexpr std::uint16_t NETTXF_more_data = 1U << 2;
inline constexpr std::uint16_t NETTXF_extra_info = 1U << 3;

inline constexpr std::uint16_t NETRXF_data_validated = 1U << 0;
inline constexpr std::uint16_t NETRXF_csum_blank = 1U << 1;
inline constexpr std::uint16_t NETRXF_more_data = 1U << 2;
inline constexpr std::uint16_t NETRXF_extra_info = 1U << 3;
inline constexpr std::uint16_t NETRXF_gso_prefix = 1U << 4;

inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_NONE = 0;
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_GSO = 1;
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_MCAST_ADD = 2;
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_MCAST_DEL = 3;
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_HASH = 4;
/// Linux only (include/xen/interface/io/netif.h); Xen's header stops at HASH.
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_XDP = 5;
/// Linux's MAX (6), which accepts XDP; Xen's header says 5. See xen-abi.md §9 item 28.
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_MAX = 6;
inline constexpr std::uint8_t XEN_NETIF_EXTRA_TYPE_MAX_XEN = 5;

inline constexpr std::uint8_t XEN_NETIF_EXTRA_FLAG_MORE = 1U << 0;

inline constexpr std::uint8_t XEN_NETIF_GSO_TYPE_NONE = 0;
inline constexpr std::uint8_t XEN_NETIF_GSO_TYPE_TCPV4 = 1;
inline constexpr std::uint8_t XEN_NETIF_GSO_TYPE_TCPV6 = 2;

inline constexpr std::int16_t NETIF_RSP_DROPPED = -2;
inline constexpr std::int16_t NETIF_RSP_ERROR = -1;
inline constexpr std::int16_t NETIF_RSP_OKAY = 0;
inline constexpr std::int16_t NETIF_RSP_NULL = 1;

// Hash types are bit numbers (_XEN_...) with masks (XEN_...).
inline constexpr unsigned _XEN_NETIF_CTRL_HASH_TYPE_IPV4 = 0;
inline constexpr unsigned _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP = 1;
inline constexpr unsigned _XEN_NETIF_CTRL_HASH_TYPE_IPV6 = 2;
inline constexpr unsigned _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP = 3;
inline constexpr std::uint32_t XEN_NETIF_CTRL_HASH_TYPE_IPV4 = 1U << 0;
inline constexpr std::uint32_t XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP = 1U << 1;
inline constexpr std::uint32_t XEN_NETIF_CTRL_HASH_TYPE_IPV6 = 1U << 2;
inline constexpr std::uint32_t XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP = 1U << 3;
inline constexpr std::uint8_t XEN_NETIF_CTRL_HASH_ALGORITHM_NONE = 0;
inline constexpr std::uint8_t XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ = 1;

inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_INVALID = 0;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS = 1;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS = 2;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_SET_HASH_KEY = 3;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE = 4;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE = 5;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING = 6;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM = 7;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE = 8;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING = 9;
inline constexpr std::uint16_t XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING = 10;

inline constexpr std::uint32_t XEN_NETIF_CTRL_STATUS_SUCCESS = 0;
inline constexpr std::uint32_t XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED = 1;
inline constexpr std::uint32_t XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER = 2;
inline constexpr std::uint32_t XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW = 3;

inline constexpr std::uint16_t XEN_NETIF_CTRLF_GREF_readonly = 1U << 0;

struct netif_tx_request {
    std::uint32_t gref;  // grant_ref_t
    std::uint16_t offset;
    std::uint16_t flags;  // NETTXF_*
    std::uint16_t id;
    std::uint16_t size;  // slot 0: whole packet; others: this fragment
};
static_assert(sizeof(netif_tx_request) == 12);
static_assert(offsetof(netif_tx_request, offset) == 4);
static_assert(offsetof(netif_tx_request, flags) == 6);
static_assert(offsetof(netif_tx_request, id) == 8);
static_assert(offsetof(netif_tx_request, size) == 10);

struct netif_extra_info {
    std::uint8_t type;   // XEN_NETIF_EXTRA_TYPE_*
    std::uint8_t flags;  // XEN_NETIF_EXTRA_FLAG_*
    union {
        struct {
            std::uint16_t size;  // MSS
            std::uint8_t type;   // XEN_NETIF_GSO_TYPE_*
            std::uint8_t pad;
            std::uint16_t features;
        } gso;
        struct {
            std::uint8_t addr[6];
        } mcast;
        struct {
            std::uint8_t type;  // _XEN_NETIF_CTRL_HASH_TYPE_* bit number
            std::uint8_t algorithm;
            std::uint8_t value[4];  // LSB first
        } hash;
        struct {
            std::uint16_t headroom;
            std::uint16_t pad[2];
        } xdp;  // Linux only
        std::uint16_t pad[3];
    } u;
};
static_assert(sizeof(netif_extra_info) == 8);
static_assert(offsetof(netif_extra_info, flags) == 1);
static_assert(offsetof(netif_extra_info, u) == 2);
static_assert(offsetof(netif_extra_info, u.gso.size) == 2);
static_assert(offsetof(netif_extra_info, u.gso.type) == 4);
static_assert(offsetof(netif_extra_info, u.gso.pad) == 5);
static_assert(offsetof(netif_extra_info, u.gso.features) == 6);
static_assert(offsetof(netif_extra_info, u.mcast.addr) == 2);
static_assert(offsetof(netif_extra_info, u.hash.type) == 2);
static_assert(offsetof(netif_extra_info, u.hash.algorithm) == 3);
static_assert(offsetof(netif_extra_info, u.hash.value) == 4);
static_assert(offsetof(netif_extra_info, u.xdp.headroom) == 2);

struct netif_tx_response {
    std::uint16_t id;
    std::int16_t status;  // NETIF_RSP_*
};
static_assert(sizeof(netif_tx_response) == 4);
static_assert(offsetof(netif_tx_response, status) == 2);

struct netif_rx_request {
    std::uint16_t id;
    std::uint16_t pad;
    std::uint32_t gref;
};
static_assert(sizeof(netif_rx_request) == 8);
static_assert(offsetof(netif_rx_request, gref) == 4);

struct netif_rx_response {
    std::uint16_t id;
    std::uint16_t offset;
    std::uint16_t flags;  // NETRXF_*
    std::int16_t status;  // < 0: NETIF_RSP_*; >= 0: bytes in this slot
};
static_assert(sizeof(netif_rx_response) == 8);
static_assert(offsetof(netif_rx_response, offset) == 2);
static_assert(offsetof(netif_rx_response, flags) == 4);
static_assert(offsetof(netif_rx_response, status) == 6);

struct xen_netif_ctrl_request {
    std::uint16_t id;
    std::uint16_t type;  // XEN_NETIF_CTRL_TYPE_*
    std::uint32_t data[3];
};
static_assert(sizeof(xen_netif_ctrl_request) == 16);
static_assert(offsetof(xen_netif_ctrl_request, type) == 2);
static_assert(offsetof(xen_netif_ctrl_request, data) == 4);

struct xen_netif_ctrl_response {
    std::uint16_t id;
    std::uint16_t type;
    std::uint32_t status;  // XEN_NETIF_CTRL_STATUS_*
    std::uint32_t data;
};
static_assert(sizeof(xen_netif_ctrl_response) == 12);
static_assert(offsetof(xen_netif_ctrl_response, type) == 2);
static_assert(offsetof(xen_netif_ctrl_response, status) == 4);
static_assert(offsetof(xen_netif_ctrl_response, data) == 8);

/// Entry of a static-grant table page (ADD/DEL_GREF_MAPPING).
struct xen_netif_gref {
    std::uint32_t ref;
    std::uint16_t flags;  // XEN_NETIF_CTRLF_GREF_*
    std::uint16_t status;
};
static_assert(sizeof(xen_netif_gref) == 8);
static_assert(offsetof(xen_netif_gref, flags) == 4);
static_assert(offsetof(xen_netif_gref, status) == 6);

/// Guest TX ring (frontend sends packets). Extra-info slots carry a netif_extra_info in the
/// first 8 bytes of a request slot. Single page: 256 slots of 12 bytes.
struct NetifTxProtocol {
    using request = netif_tx_request;
    using response = netif_tx_response;
    static constexpr std::string_view name = "netif_tx";
};
/// Guest RX ring (frontend posts buffers; backend fills them). 256 slots of 8 bytes.
struct NetifRxProtocol {
    using request = netif_rx_request;
    using response = netif_rx_response;
    static constexpr std::string_view name = "netif_rx";
};
/// Control ring (hash configuration, static grants). 128 slots of 16 bytes.
struct NetifCtrlProtocol {
    using request = xen_netif_ctrl_request;
    using response = xen_netif_ctrl_response;
    static constexpr std::string_view name = "netif_ctrl";
};

static_assert(entry_size<NetifTxProtocol> == 12);
static_assert(entry_size<NetifRxProtocol> == 8);
static_assert(entry_size<NetifCtrlProtocol> == 16);
static_assert(ring_entries_for_pages<NetifTxProtocol>(1) == 256);
static_assert(ring_entries_for_pages<NetifRxProtocol>(1) == 256);
static_assert(ring_entries_for_pages<NetifCtrlProtocol>(1) == 128);

}  // namespace hv::rings
