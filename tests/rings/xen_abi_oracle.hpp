// The oracle side of the compile-time ABI check: Xen's own public headers (Debian libxen-dev,
// used only as a test oracle) and constexpr tables of their numbers, built from abi_list.inc and
// the i386 rows gen_xen32_layout.sh extracts with clang -m32.
//
// Xen's constants are macros (BLKIF_OP_READ, GNTST_okay, ...) with the names of our constexpr
// constants in hv::rings, so once this header is in, `hv::rings::BLKIF_OP_READ` no longer
// parses. A TU that needs both includes ours first, captures our numbers into its own table,
// then includes this header (see abi_static_check.cpp). Xen's structs are global and ours are in
// hv::rings, so struct names do not clash. Include nothing of ours after this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "abi_rows.hpp"

// The newest interface version (as the tools see it), so every op number is declared.
#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/io/blkif.h>
#include <xen/io/console.h>
#include <xen/io/netif.h>
#include <xen/io/pciif.h>
#include <xen/io/protocols.h>
#include <xen/io/ring.h>
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>
#include <xen/xen.h>

namespace hv::test::xen_abi {

/// Every row of abi_list.inc, from Xen's headers (x86_64).
inline constexpr abi::Row native[] = {
#define OFF(s, f) {#s "." #f, static_cast<long long>(offsetof(struct s, f))},
#define SZ(s)                                                 \
    {#s ".sizeof", static_cast<long long>(sizeof(struct s))}, \
        {#s ".alignof", static_cast<long long>(alignof(struct s))},
#define AL(s) {#s ".alignof", static_cast<long long>(alignof(struct s))},
#define CONST(c) {#c, static_cast<long long>(c)},
#define SRING(f) {"sring." #f, static_cast<long long>(offsetof(struct blkif_sring, f))},
#define ENTRY(x, ours) \
    {#x "_sring_entry.sizeof", static_cast<long long>(sizeof(union x##_sring_entry))},
#define RINGSZ(x, ours, pages) \
    {#x ".ring_size." #pages, static_cast<long long>(__CONST_RING_SIZE(x, (pages)*4096))},
#include "abi_list.inc"
#undef OFF
#undef SZ
#undef AL
#undef CONST
#undef SRING
#undef ENTRY
#undef RINGSZ
    // __pad is a reserved name in C++, ours is `pad`.
    {"sring.pad", static_cast<long long>(offsetof(struct blkif_sring, __pad))},
};

/// The i386 blkif layout (clang -m32 against Xen's io/blkif.h, see xen32_layout.c).
inline constexpr abi::Row x86_32[] = {
#include "xen32_layout.inc"
};

inline constexpr std::string_view proto_x86_32 = XEN_IO_PROTO_ABI_X86_32;
inline constexpr std::string_view proto_x86_64 = XEN_IO_PROTO_ABI_X86_64;
inline constexpr std::string_view proto_arm = XEN_IO_PROTO_ABI_ARM;
inline constexpr std::string_view pci_magic = XEN_PCI_MAGIC;

}  // namespace hv::test::xen_abi
