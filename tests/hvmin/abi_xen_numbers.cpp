// Sizes, offsets and constants taken from Xen's own public headers (Debian libxen-dev).
// Kept apart from hv::rings: Xen's headers define its names as macros.
#include <stdint.h>

#include <xen/xen.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>

#include <cstddef>

#include "abi_xen_numbers.hpp"

namespace hv::hvmin::test {

XenAbiNumbers xen_abi_numbers() {
    XenAbiNumbers n{};
    n.grant_entry_v1 = sizeof(grant_entry_v1_t);
    n.map = sizeof(gnttab_map_grant_ref_t);
    n.map_status = offsetof(gnttab_map_grant_ref_t, status);
    n.map_handle = offsetof(gnttab_map_grant_ref_t, handle);
    n.map_dev_bus_addr = offsetof(gnttab_map_grant_ref_t, dev_bus_addr);
    n.unmap = sizeof(gnttab_unmap_grant_ref_t);
    n.unmap_status = offsetof(gnttab_unmap_grant_ref_t, status);
    n.copy = sizeof(gnttab_copy_t);
    n.copy_dest = offsetof(gnttab_copy_t, dest);
    n.copy_len = offsetof(gnttab_copy_t, len);
    n.copy_status = offsetof(gnttab_copy_t, status);
    n.query_size = sizeof(gnttab_query_size_t);
    n.setup_table = sizeof(gnttab_setup_table_t);
    n.alloc_unbound = sizeof(evtchn_alloc_unbound_t);
    n.bind_interdomain = sizeof(evtchn_bind_interdomain_t);
    n.bind_virq = sizeof(evtchn_bind_virq_t);
    n.status = sizeof(evtchn_status_t);
    n.status_u = offsetof(evtchn_status_t, u);
    n.gntst_no_space = GNTST_no_space;
    n.gntst_bad_copy_arg = GNTST_bad_copy_arg;
    n.gtf_sub_page = GTF_sub_page;
    n.gntmap_contains_pte = GNTMAP_contains_pte;
    n.gnttabop_cache_flush = GNTTABOP_query_size;
    n.domid_self = DOMID_SELF;
    n.domid_idle = DOMID_IDLE;
    n.evtchnop_unmask = EVTCHNOP_unmask;
    n.evtchnop_set_priority = EVTCHNOP_set_priority;
    n.evtchnstat_ipi = EVTCHNSTAT_ipi;
    n.virq_dom_exc = VIRQ_DOM_EXC;
    return n;
}

}  // namespace hv::hvmin::test
