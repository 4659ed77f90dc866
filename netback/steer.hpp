// Rx queue steering on a multi-queue tap (xen-abi.md §6.7; Linux netback xenvif_select_queue):
// the kernel picks the tap queue, so the queue a frontend's hash mapping names is chosen there,
// by an eBPF socket-filter program attached with TUNSETSTEERINGEBPF (as QEMU's virtio-net RSS).
// The program is generated here (no compiler step): it parses untagged Ethernet + IPv4 / IPv6
// (extension headers walked, up to 6) + TCP with bpf_skb_load_bytes_relative, computes the Toeplitz hash from a per-(input byte
// position, byte value) table in an array map (recomputed here when the key changes) and returns
// mapping[hash % size], or hash % queues, from a second map; a frame no enabled type applies to
// gets hash 0 (Linux's cleared hash). tun takes the answer modulo its attached queues.
// Layer: L2, control path. Threads: the thread serving the vif's control ring.
#pragma once

#include <cstdint>
#include <span>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"
#include "netback/ctrl.hpp"

namespace hv::net {

class SteeringProgram {
public:
    /// Input bytes the table covers: IPv6 addresses and TCP ports.
    static constexpr unsigned kPositions = 36;

    /// Creates the two maps and loads the program. Errors: the bpf() errno (EPERM without
    /// CAP_BPF, ENOSYS without CONFIG_BPF_SYSCALL, EINVAL when the verifier refuses it).
    static Result<SteeringProgram> create() noexcept;

    /// Puts `s` (types, key, mapping) and `queues` into the maps; the table is recomputed only
    /// when the key changed. Frames already being steered may see a mix of old and new for the
    /// duration of the update (a queue either would name; never an out-of-range one).
    Result<void> update(const HashSettings& s, unsigned queues) noexcept;
    int fd() const noexcept { return prog_.get(); }
    /// BPF_PROG_TEST_RUN on `frame` (more than 14 bytes: the kernel refuses less): the program's
    /// answer.
    Result<std::uint32_t> test_run(std::span<const std::uint8_t> frame) const noexcept;

private:
    SteeringProgram(UniqueFd prog, UniqueFd table, UniqueFd conf) noexcept
        : prog_(std::move(prog)), table_(std::move(table)), conf_(std::move(conf)) {}
    UniqueFd prog_, table_, conf_;
    std::array<std::uint8_t, HashSettings::kMaxKey> key_{};
    bool table_set_ = false;
};

}  // namespace hv::net
