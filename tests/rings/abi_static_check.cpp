// [abi] at compile time: every size, alignment, offset and constant of abi_list.inc, the i386
// blkif layout and the protocol strings are static_asserted equal to Xen's own public headers.
// This TU has no test case: if one number differs, rings_tests does not build, and the error
// names the row and prints both values.
//
// Order matters: Xen's constants are macros with our constants' names, so our numbers are
// captured into tables (hv::test::our_abi) before xen_abi_oracle.hpp brings Xen's headers in.
#include <cstddef>
#include <iterator>
#include <string_view>

#include "abi_rows.hpp"
#include "hv/rings/protocols/blkif.hpp"
#include "hv/rings/protocols/console.hpp"
#include "hv/rings/protocols/netif.hpp"
#include "hv/rings/protocols/pciif.hpp"
#include "hv/rings/protocols/xs_wire.hpp"
#include "hv/rings/ring.hpp"
#include "hv/rings/xen/event_channel.hpp"
#include "hv/rings/xen/grant_table.hpp"
#include "hv/rings/xen/xen.hpp"
#include "hv/rings/xenbus.hpp"

namespace hv::test::our_abi {

using namespace hv::rings;

// Xen's ring.h declares the entries as `ring[1]` after the header; ours sit right after it.
inline constexpr std::size_t sring_req_prod = offsetof(SringHeader, req_prod);
inline constexpr std::size_t sring_req_event = offsetof(SringHeader, req_event);
inline constexpr std::size_t sring_rsp_prod = offsetof(SringHeader, rsp_prod);
inline constexpr std::size_t sring_rsp_event = offsetof(SringHeader, rsp_event);
inline constexpr std::size_t sring_pvt = offsetof(SringHeader, pvt);
inline constexpr std::size_t sring_ring = sizeof(SringHeader);

inline constexpr abi::Row native[] = {
#define OFF(s, f) {#s "." #f, static_cast<long long>(offsetof(s, f))},
#define SZ(s)                                          \
    {#s ".sizeof", static_cast<long long>(sizeof(s))}, \
        {#s ".alignof", static_cast<long long>(alignof(s))},
#define AL(s) {#s ".alignof", static_cast<long long>(alignof(s))},
#define CONST(c) {#c, static_cast<long long>(c)},
#define SRING(f) {"sring." #f, static_cast<long long>(sring_##f)},
#define ENTRY(x, ours) {#x "_sring_entry.sizeof", static_cast<long long>(entry_size<ours>)},
#define RINGSZ(x, ours, pages) \
    {#x ".ring_size." #pages, static_cast<long long>(ring_entries_for_pages<ours>(pages))},
#include "abi_list.inc"
#undef OFF
#undef SZ
#undef AL
#undef CONST
#undef SRING
#undef ENTRY
#undef RINGSZ
    {"sring.pad", static_cast<long long>(offsetof(SringHeader, pad))},
};

// Xen's i386 struct name, our x86_32 struct, the field.
#define HV_ABI_X86_32_LIST(OFF32, SZ32)                                          \
    SZ32(blkif_request, blkif_x86_32_request)                                    \
    OFF32(blkif_request, blkif_x86_32_request, operation)                        \
    OFF32(blkif_request, blkif_x86_32_request, nr_segments)                      \
    OFF32(blkif_request, blkif_x86_32_request, handle)                           \
    OFF32(blkif_request, blkif_x86_32_request, id)                               \
    OFF32(blkif_request, blkif_x86_32_request, sector_number)                    \
    OFF32(blkif_request, blkif_x86_32_request, seg)                              \
    SZ32(blkif_request_discard, blkif_x86_32_request_discard)                    \
    OFF32(blkif_request_discard, blkif_x86_32_request_discard, flag)             \
    OFF32(blkif_request_discard, blkif_x86_32_request_discard, handle)           \
    OFF32(blkif_request_discard, blkif_x86_32_request_discard, id)               \
    OFF32(blkif_request_discard, blkif_x86_32_request_discard, sector_number)    \
    OFF32(blkif_request_discard, blkif_x86_32_request_discard, nr_sectors)       \
    SZ32(blkif_request_indirect, blkif_x86_32_request_indirect)                  \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, indirect_op)    \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, nr_segments)    \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, id)             \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, sector_number)  \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, handle)         \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, indirect_grefs) \
    OFF32(blkif_request_indirect, blkif_x86_32_request_indirect, pad)            \
    SZ32(blkif_response, blkif_x86_32_response)                                  \
    OFF32(blkif_response, blkif_x86_32_response, operation)                      \
    OFF32(blkif_response, blkif_x86_32_response, status)                         \
    SZ32(blkif_request_segment, blkif_request_segment)

inline constexpr abi::Row x86_32[] = {
    {"blkif_sring_entry.sizeof", static_cast<long long>(entry_size<BlkifX86_32Protocol>)},
    {"blkif_sring.ring", static_cast<long long>(sizeof(SringHeader))},
#define OFF32(xs, ours, f) {#xs "." #f, static_cast<long long>(offsetof(ours, f))},
#define SZ32(xs, ours)                                     \
    {#xs ".sizeof", static_cast<long long>(sizeof(ours))}, \
        {#xs ".alignof", static_cast<long long>(alignof(ours))},
    HV_ABI_X86_32_LIST(OFF32, SZ32)
#undef OFF32
#undef SZ32
};

inline constexpr std::string_view proto_x86_32 = XEN_IO_PROTO_ABI_X86_32;
inline constexpr std::string_view proto_x86_64 = XEN_IO_PROTO_ABI_X86_64;
inline constexpr std::string_view proto_arm = XEN_IO_PROTO_ABI_ARM;
inline constexpr std::string_view pci_magic = XEN_PCI_MAGIC;
inline constexpr std::string_view blkif_abi = BlkifProtocol::abi;
inline constexpr std::string_view blkif_x86_32_abi = BlkifX86_32Protocol::abi;

// Fields newer than Debian's Xen 4.17: the numbers of xen-abi.md.
static_assert(offsetof(xencons_interface, connection) == 3088);
static_assert(sizeof(xencons_interface) == 3092);
static_assert(offsetof(xenstore_domain_interface, evtchn_port) == 2076);
static_assert(XS_GET_FEATURE == 23 && XS_SET_FEATURE == 24);
static_assert(XS_GET_QUOTA == 25 && XS_SET_QUOTA == 26);
static_assert(XEN_NETIF_EXTRA_TYPE_XDP == 5 && XEN_NETIF_EXTRA_TYPE_MAX == 6);
static_assert(offsetof(netif_extra_info, u.xdp.headroom) == 2);
static_assert(XENSTORE_SERVER_FEATURE_WATCHDEPTH == 4 && XENSTORE_SERVER_FEATURE_DOMID_ANY == 8);

// The ring-size table of xen-abi.md section 1.2 (the i386 blkif ring has the same sizes).
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(1) == 32);
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(2) == 64);
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(4) == 128);
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(8) == 256);
static_assert(ring_entries_for_pages<BlkifX86_32Protocol>(16) == 512);
static_assert(ring_entries_for_pages<BlkifProtocol>(16) == 512);
static_assert(ring_entries_for_pages<NetifTxProtocol>(1) == 256);
static_assert(ring_entries_for_pages<NetifCtrlProtocol>(1) == 128);

}  // namespace hv::test::our_abi

// From here on Xen's macros are defined: nothing of ours is named again.
#include "xen_abi_oracle.hpp"

namespace {

namespace abi = hv::test::abi;
namespace ours = hv::test::our_abi;
namespace xen = hv::test::xen_abi;

// On a difference the compiler prints the row and "the comparison reduces to '(ours == xen)'".
#define HV_ABI_SAME(table, name)                                                       \
    static_assert(abi::value_of(ours::table, name) == abi::value_of(xen::table, name), \
                  "ABI differs from Xen's headers: " name);

#define OFF(s, f) HV_ABI_SAME(native, #s "." #f)
#define SZ(s) HV_ABI_SAME(native, #s ".sizeof") HV_ABI_SAME(native, #s ".alignof")
#define AL(s) HV_ABI_SAME(native, #s ".alignof")
#define CONST(c) HV_ABI_SAME(native, #c)
#define SRING(f) HV_ABI_SAME(native, "sring." #f)
#define ENTRY(x, o) HV_ABI_SAME(native, #x "_sring_entry.sizeof")
#define RINGSZ(x, o, pages) HV_ABI_SAME(native, #x ".ring_size." #pages)
#include "abi_list.inc"
#undef OFF
#undef SZ
#undef AL
#undef CONST
#undef SRING
#undef ENTRY
#undef RINGSZ
HV_ABI_SAME(native, "sring.pad")
static_assert(std::size(ours::native) == std::size(xen::native));
static_assert(std::size(ours::native) > 400);

#define OFF32(xs, o, f) HV_ABI_SAME(x86_32, #xs "." #f)
#define SZ32(xs, o) HV_ABI_SAME(x86_32, #xs ".sizeof") HV_ABI_SAME(x86_32, #xs ".alignof")
HV_ABI_X86_32_LIST(OFF32, SZ32)
#undef OFF32
#undef SZ32
HV_ABI_SAME(x86_32, "blkif_sring_entry.sizeof")
HV_ABI_SAME(x86_32, "blkif_sring.ring")
// Every row clang -m32 produced is one of ours: nothing extracted goes unchecked.
static_assert(std::size(ours::x86_32) == std::size(xen::x86_32));

static_assert(ours::proto_x86_32 == xen::proto_x86_32);
static_assert(ours::proto_x86_64 == xen::proto_x86_64);
static_assert(ours::proto_arm == xen::proto_arm);
static_assert(ours::pci_magic == xen::pci_magic);
static_assert(ours::blkif_abi == xen::proto_x86_64);
static_assert(ours::blkif_x86_32_abi == xen::proto_x86_32);

}  // namespace
