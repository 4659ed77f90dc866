// LVM logical volumes without device-mapper: resolve VG/LV through liblvm2cmd (report output in
// JSON), then serve the LV either as /dev/VG/LV (when device-mapper made it) or by mapping its
// linear and striped segments onto its PVs with the io_uring engine.
// Layer: L3, control path only (LVM commands take milliseconds and a process-wide lock).
// Thread-safe: calls into liblvm2cmd are serialised by one process-wide mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "blkback/engine.hpp"

namespace hv::blk {

/// One stripe (area) of a segment: its PV and where the area starts on it.
struct LvmArea {
    std::string pv_path;            ///< e.g. "/dev/loop3"
    std::uint64_t start_extent = 0; ///< first physical extent of the area on the PV
    std::uint64_t pe_start_bytes = 0; ///< the PV's data start (pe_start)
    /// Byte offset on the PV of the area's first byte.
    std::uint64_t pv_offset_bytes = 0;
};

struct LvmSegment {
    std::uint64_t start_bytes = 0;   ///< in the LV
    std::uint64_t size_bytes = 0;
    bool striped = false;            ///< "striped" with ≥ 2 stripes; otherwise linear
    std::uint64_t stripe_size_bytes = 0;  ///< 0 when linear
    std::vector<LvmArea> areas;      ///< 1 (linear) or `stripes`
};

struct LvmVolume {
    std::string vg;
    std::string lv;
    std::uint64_t size_bytes = 0;
    std::uint64_t extent_size_bytes = 0;
    std::vector<LvmSegment> segments;  ///< sorted, contiguous, covering size_bytes
    std::string dev_path() const { return "/dev/" + vg + "/" + lv; }
};

/// Devices LVM may look at. LVM otherwise scans every block device on the host, and one stuck
/// device elsewhere would block us; passed as `--devices` (lvm 2.03.12+). Empty: no limit.
struct LvmScan {
    std::vector<std::string> devices;
};

/// Runs `lvs` and `pvs` through liblvm2cmd. Errors: Errc::invalid_argument (a name LVM
/// would not accept), Errc::lvm_not_found, Errc::lvm_command, Errc::lvm_report,
/// Errc::lvm_unsupported (segment types other than linear/striped, e.g. thin, raid, cache).
hv::Result<LvmVolume> lvm_resolve(std::string_view vg, std::string_view lv,
                                  const LvmScan& scan) noexcept;

/// The pure half of lvm_resolve: builds the volume from the JSON reports of
///   lvs --segments -o lv_name,vg_name,lv_size,vg_extent_size,seg_start,seg_size,segtype,
///                     stripes,stripe_size,devices --units b --nosuffix --reportformat json
///   pvs -o pv_name,pe_start --units b --nosuffix --reportformat json
/// Everything in them is checked (numbers, overflow, geometry, PVs present).
hv::Result<LvmVolume> lvm_parse_reports(std::string_view vg, std::string_view lv,
                                        std::string_view lvs_json,
                                        std::string_view pvs_json) noexcept;

/// Serves `vol` by mapping its segments onto its PVs (each opened O_DIRECT): I/O crossing a
/// segment or stripe boundary is split and completes once (first error wins).
hv::Result<std::unique_ptr<BlockEngine>> make_lvm_engine(const LvmVolume& vol,
                                                         const UringEngineOptions& opt = {}) noexcept;

/// Resolves VG/LV and opens it: /dev/VG/LV when it is a block device (device-mapper present),
/// otherwise make_lvm_engine() over the PVs.
hv::Result<std::unique_ptr<BlockEngine>> open_lvm_volume(std::string_view vg, std::string_view lv,
                                                         const LvmScan& scan,
                                                         const UringEngineOptions& opt = {}) noexcept;

}  // namespace hv::blk
