/* Oracle for the x86_32 blkif layout: compiled by gen_xen32_layout.sh with `clang -m32` against
 * Xen's own io/blkif.h; every constant below becomes a {"struct.field", value} row. */
#include <stddef.h>
#include <stdint.h>
#include <xen/io/blkif.h>

#define OFF(s, f) const unsigned hvx__##s##__##f = offsetof(struct s, f);
#define SZ(s)                                              \
    const unsigned hvx__##s##__sizeof = sizeof(struct s); \
    const unsigned hvx__##s##__alignof = _Alignof(struct s);

SZ(blkif_request)
OFF(blkif_request, operation)
OFF(blkif_request, nr_segments)
OFF(blkif_request, handle)
OFF(blkif_request, id)
OFF(blkif_request, sector_number)
OFF(blkif_request, seg)
SZ(blkif_request_discard)
OFF(blkif_request_discard, flag)
OFF(blkif_request_discard, handle)
OFF(blkif_request_discard, id)
OFF(blkif_request_discard, sector_number)
OFF(blkif_request_discard, nr_sectors)
SZ(blkif_request_indirect)
OFF(blkif_request_indirect, indirect_op)
OFF(blkif_request_indirect, nr_segments)
OFF(blkif_request_indirect, id)
OFF(blkif_request_indirect, sector_number)
OFF(blkif_request_indirect, handle)
OFF(blkif_request_indirect, indirect_grefs)
OFF(blkif_request_indirect, pad)
SZ(blkif_response)
OFF(blkif_response, operation)
OFF(blkif_response, status)
SZ(blkif_request_segment)
const unsigned hvx__blkif_sring_entry__sizeof = sizeof(union blkif_sring_entry);
const unsigned hvx__blkif_sring__ring = offsetof(struct blkif_sring, ring);
