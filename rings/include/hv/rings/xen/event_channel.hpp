// Event channel ABI (xen/include/public/event_channel.h): ops, op structs, states, VIRQs.
// Layer: rings (L0). Header-only, no syscalls. Layouts checked against xen-abi.md §3.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hv/rings/xen/xen.hpp"

namespace hv::rings {

using evtchn_port_t = std::uint32_t;

// SPEC: event_channel.h EVTCHNOP_*
inline constexpr std::uint32_t EVTCHNOP_bind_interdomain = 0;
inline constexpr std::uint32_t EVTCHNOP_bind_virq = 1;
inline constexpr std::uint32_t EVTCHNOP_bind_pirq = 2;
inline constexpr std::uint32_t EVTCHNOP_close = 3;
inline constexpr std::uint32_t EVTCHNOP_send = 4;
inline constexpr std::uint32_t EVTCHNOP_status = 5;
inline constexpr std::uint32_t EVTCHNOP_alloc_unbound = 6;
inline constexpr std::uint32_t EVTCHNOP_bind_ipi = 7;
inline constexpr std::uint32_t EVTCHNOP_bind_vcpu = 8;
inline constexpr std::uint32_t EVTCHNOP_unmask = 9;
inline constexpr std::uint32_t EVTCHNOP_reset = 10;
inline constexpr std::uint32_t EVTCHNOP_init_control = 11;
inline constexpr std::uint32_t EVTCHNOP_expand_array = 12;
inline constexpr std::uint32_t EVTCHNOP_set_priority = 13;

// SPEC: event_channel.h EVTCHNSTAT_*
inline constexpr std::uint32_t EVTCHNSTAT_closed = 0;
inline constexpr std::uint32_t EVTCHNSTAT_unbound = 1;
inline constexpr std::uint32_t EVTCHNSTAT_interdomain = 2;
inline constexpr std::uint32_t EVTCHNSTAT_pirq = 3;
inline constexpr std::uint32_t EVTCHNSTAT_virq = 4;
inline constexpr std::uint32_t EVTCHNSTAT_ipi = 5;

// SPEC: xen.h VIRQ_*
inline constexpr std::uint32_t VIRQ_TIMER = 0;
inline constexpr std::uint32_t VIRQ_DEBUG = 1;
inline constexpr std::uint32_t VIRQ_CONSOLE = 2;
inline constexpr std::uint32_t VIRQ_DOM_EXC = 3;
inline constexpr std::uint32_t VIRQ_TBUF = 4;
inline constexpr std::uint32_t VIRQ_DEBUGGER = 6;
inline constexpr std::uint32_t VIRQ_XENOPROF = 7;
inline constexpr std::uint32_t VIRQ_CON_RING = 8;
inline constexpr std::uint32_t VIRQ_PCPU_STATE = 9;
inline constexpr std::uint32_t VIRQ_MEM_EVENT = 10;
inline constexpr std::uint32_t VIRQ_ARGO = 11;
inline constexpr std::uint32_t VIRQ_ENOMEM = 12;
inline constexpr std::uint32_t VIRQ_XENPMU = 13;
inline constexpr std::uint32_t NR_VIRQS = 24;

/// 2-level ABI: 64-bit guests have 4096 ports; port 0 is reserved.
inline constexpr evtchn_port_t EVTCHN_2L_NR_CHANNELS = 4096;

struct evtchn_alloc_unbound {
    domid_t dom;         // in (DOMID_SELF ok)
    domid_t remote_dom;  // in
    evtchn_port_t port;  // out
};
static_assert(sizeof(evtchn_alloc_unbound) == 8);
static_assert(offsetof(evtchn_alloc_unbound, remote_dom) == 2);
static_assert(offsetof(evtchn_alloc_unbound, port) == 4);

struct evtchn_bind_interdomain {
    domid_t remote_dom;         // in
    evtchn_port_t remote_port;  // in
    evtchn_port_t local_port;   // out
};
static_assert(sizeof(evtchn_bind_interdomain) == 12);
static_assert(offsetof(evtchn_bind_interdomain, remote_port) == 4);
static_assert(offsetof(evtchn_bind_interdomain, local_port) == 8);

struct evtchn_bind_virq {
    std::uint32_t virq;  // in
    std::uint32_t vcpu;  // in
    evtchn_port_t port;  // out
};
static_assert(sizeof(evtchn_bind_virq) == 12);
static_assert(offsetof(evtchn_bind_virq, vcpu) == 4);
static_assert(offsetof(evtchn_bind_virq, port) == 8);

struct evtchn_close {
    evtchn_port_t port;
};
struct evtchn_send {
    evtchn_port_t port;
};
struct evtchn_unmask {
    evtchn_port_t port;
};
static_assert(sizeof(evtchn_close) == 4 && sizeof(evtchn_send) == 4 && sizeof(evtchn_unmask) == 4);

struct evtchn_status {
    domid_t dom;              // in
    evtchn_port_t port;       // in
    std::uint32_t status;     // out: EVTCHNSTAT_*
    std::uint32_t vcpu;       // out
    union {
        struct {
            domid_t dom;
        } unbound;
        struct {
            domid_t dom;
            evtchn_port_t port;
        } interdomain;
        std::uint32_t pirq;
        std::uint32_t virq;
    } u;
};
static_assert(sizeof(evtchn_status) == 24);
static_assert(offsetof(evtchn_status, port) == 4);
static_assert(offsetof(evtchn_status, status) == 8);
static_assert(offsetof(evtchn_status, vcpu) == 12);
static_assert(offsetof(evtchn_status, u) == 16);
static_assert(offsetof(evtchn_status, u.interdomain.port) == 20);

struct evtchn_bind_vcpu {
    evtchn_port_t port;
    std::uint32_t vcpu;
};
static_assert(sizeof(evtchn_bind_vcpu) == 8);

}  // namespace hv::rings
