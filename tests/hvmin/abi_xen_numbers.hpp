// Numbers from Xen's public headers, for the [abi] tests.
#pragma once

#include <cstddef>

namespace hv::hvmin::test {

struct XenAbiNumbers {
    std::size_t grant_entry_v1, map, map_status, map_handle, map_dev_bus_addr, unmap, unmap_status,
        copy, copy_dest, copy_len, copy_status, query_size, setup_table, alloc_unbound,
        bind_interdomain, bind_virq, status, status_u;
    long gntst_no_space, gntst_bad_copy_arg, gtf_sub_page, gntmap_contains_pte,
        gnttabop_cache_flush, domid_self, domid_idle, evtchnop_unmask, evtchnop_set_priority,
        evtchnstat_ipi, virq_dom_exc;
};

XenAbiNumbers xen_abi_numbers();

}  // namespace hv::hvmin::test
