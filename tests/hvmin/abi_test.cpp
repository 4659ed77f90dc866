// hv::rings Xen structs compared with the numbers in Xen's own public headers.
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>

#include "abi_xen_numbers.hpp"
#include "hv/rings/xen/event_channel.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hvmin/wire.hpp"

namespace r = hv::rings;
using hv::hvmin::test::xen_abi_numbers;

TEST_CASE("grant table structs have Xen's sizes and offsets", "[hvmin][abi]") {
    const auto x = xen_abi_numbers();
    CHECK(sizeof(r::grant_entry_v1) == x.grant_entry_v1);
    CHECK(sizeof(r::gnttab_map_grant_ref) == x.map);
    CHECK(offsetof(r::gnttab_map_grant_ref, status) == x.map_status);
    CHECK(offsetof(r::gnttab_map_grant_ref, handle) == x.map_handle);
    CHECK(offsetof(r::gnttab_map_grant_ref, dev_bus_addr) == x.map_dev_bus_addr);
    CHECK(sizeof(r::gnttab_unmap_grant_ref) == x.unmap);
    CHECK(offsetof(r::gnttab_unmap_grant_ref, status) == x.unmap_status);
    CHECK(sizeof(r::gnttab_copy) == x.copy);
    CHECK(offsetof(r::gnttab_copy, dest) == x.copy_dest);
    CHECK(offsetof(r::gnttab_copy, len) == x.copy_len);
    CHECK(offsetof(r::gnttab_copy, status) == x.copy_status);
    CHECK(sizeof(r::gnttab_query_size) == x.query_size);
    CHECK(sizeof(r::gnttab_setup_table) == x.setup_table);
    CHECK(r::GNTST_no_space == x.gntst_no_space);
    CHECK(r::GNTST_bad_copy_arg == x.gntst_bad_copy_arg);
    CHECK(r::GTF_sub_page == x.gtf_sub_page);
    CHECK(r::GNTMAP_contains_pte == x.gntmap_contains_pte);
    CHECK(r::GNTTABOP_query_size == x.gnttabop_cache_flush);
    CHECK(r::DOMID_SELF == x.domid_self);
    CHECK(r::DOMID_IDLE == x.domid_idle);
}

TEST_CASE("event channel structs have Xen's sizes and offsets", "[hvmin][abi]") {
    const auto x = xen_abi_numbers();
    CHECK(sizeof(r::evtchn_alloc_unbound) == x.alloc_unbound);
    CHECK(sizeof(r::evtchn_bind_interdomain) == x.bind_interdomain);
    CHECK(sizeof(r::evtchn_bind_virq) == x.bind_virq);
    CHECK(sizeof(r::evtchn_status) == x.status);
    CHECK(offsetof(r::evtchn_status, u) == x.status_u);
    CHECK(r::EVTCHNOP_unmask == x.evtchnop_unmask);
    CHECK(r::EVTCHNOP_set_priority == x.evtchnop_set_priority);
    CHECK(r::EVTCHNSTAT_ipi == x.evtchnstat_ipi);
    CHECK(r::VIRQ_DOM_EXC == x.virq_dom_exc);
}

TEST_CASE("the decoder accepts a well-formed batch and echoes its sequence number", "[hvmin][abi]") {
    std::byte msg[sizeof(hv::hvmin::wire::Header) + 2 * sizeof(r::gnttab_copy)]{};
    hv::hvmin::wire::Header h{hv::hvmin::wire::kMagic,
                              static_cast<std::uint16_t>(hv::hvmin::wire::Op::gnttab_copy), 0, 2, 77};
    std::memcpy(msg, &h, sizeof h);
    hv::hvmin::wire::Decoded d{};
    hv::hvmin::wire::DecodeError e{};
    REQUIRE(hv::hvmin::wire::decode(msg, d, e));
    CHECK(d.count == 2);
    CHECK(d.seq == 77);
    CHECK(d.body.size() == 2 * sizeof(r::gnttab_copy));
}
