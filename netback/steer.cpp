// The tap steering program (steer.hpp). Layer: L2, control path.
#include "netback/steer.hpp"

#include <arpa/inet.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <vector>

namespace hv::net {

namespace {

namespace w = hv::rings;

/// The conf map's one value (little more than HashSettings, in the program's layout).
struct SteerConf {
    std::uint32_t flags = 0;
    std::uint32_t queues = 0;
    std::uint32_t size = 0;
    std::uint32_t pad = 0;
    std::uint32_t mapping[HashSettings::kMaxMapping] = {};
};
constexpr std::int16_t kConfQueues = 4, kConfSize = 8, kConfMapping = 16;
constexpr std::size_t kTableBytes = SteeringProgram::kPositions * 256 * sizeof(std::uint32_t);

long sys_bpf(int cmd, bpf_attr& a) noexcept {
    return ::syscall(SYS_bpf, cmd, &a, sizeof a);
}

Result<UniqueFd> array_map(std::uint32_t value_size) noexcept {
    bpf_attr a{};
    a.map_type = BPF_MAP_TYPE_ARRAY;
    a.key_size = sizeof(std::uint32_t);
    a.value_size = value_size;
    a.max_entries = 1;
    const long fd = sys_bpf(BPF_MAP_CREATE, a);
    if (fd < 0) {
        return fail_errno();
    }
    return UniqueFd(static_cast<int>(fd));
}

Result<void> map_put(int map, const void* value) noexcept {
    const std::uint32_t key = 0;
    bpf_attr a{};
    a.map_fd = static_cast<std::uint32_t>(map);
    a.key = reinterpret_cast<std::uint64_t>(&key);
    a.value = reinterpret_cast<std::uint64_t>(value);
    a.flags = BPF_ANY;
    if (sys_bpf(BPF_MAP_UPDATE_ELEM, a) != 0) {
        return fail_errno();
    }
    return {};
}

/// A minimal eBPF assembler: instructions, forward labels patched at the end.
class Asm {
public:
    enum Reg : std::uint8_t { r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, fp = 10 };
    using Label = unsigned;

    Label label() {
        at_.push_back(-1);
        return static_cast<Label>(at_.size() - 1);
    }
    void bind(Label l) { at_[l] = static_cast<int>(code_.size()); }

    void mov(Reg d, Reg s) { alu64(BPF_MOV | BPF_X, d, s, 0); }
    void mov(Reg d, std::int32_t imm) { alu64(BPF_MOV | BPF_K, d, r0, imm); }
    void add(Reg d, std::int32_t imm) { alu64(BPF_ADD | BPF_K, d, r0, imm); }
    void add(Reg d, Reg s) { alu64(BPF_ADD | BPF_X, d, s, 0); }
    void band(Reg d, std::int32_t imm) { alu64(BPF_AND | BPF_K, d, r0, imm); }
    void lsh(Reg d, std::int32_t imm) { alu64(BPF_LSH | BPF_K, d, r0, imm); }
    void rsh(Reg d, std::int32_t imm) { alu64(BPF_RSH | BPF_K, d, r0, imm); }
    void bxor(Reg d, Reg s) { alu64(BPF_XOR | BPF_X, d, s, 0); }
    /// 32-bit unsigned d %= s (the upper half of d zeroed).
    void mod32(Reg d, Reg s) { put(BPF_ALU | BPF_MOD | BPF_X, d, s, 0, 0); }
    void ldx(std::uint8_t size, Reg d, Reg s, std::int16_t off) {
        put(BPF_LDX | BPF_MEM | size, d, s, off, 0);
    }
    void stx(std::uint8_t size, Reg d, std::int16_t off, Reg s) {
        put(BPF_STX | BPF_MEM | size, d, s, off, 0);
    }
    void st(std::uint8_t size, Reg d, std::int16_t off, std::int32_t imm) {
        put(BPF_ST | BPF_MEM | size, d, r0, off, imm);
    }
    /// d = the map whose fd is `fd` (BPF_PSEUDO_MAP_FD, two slots).
    void ld_map(Reg d, int fd) {
        put(BPF_LD | BPF_DW | BPF_IMM, d, static_cast<Reg>(BPF_PSEUDO_MAP_FD), 0, fd);
        put(0, r0, r0, 0, 0);
    }
    void call(std::int32_t helper) { put(BPF_JMP | BPF_CALL, r0, r0, 0, helper); }
    void exit() { put(BPF_JMP | BPF_EXIT, r0, r0, 0, 0); }
    void ja(Label l) { jump(BPF_JA, r0, 0, l); }
    void jeq(Reg d, std::int32_t imm, Label l) { jump(BPF_JEQ, d, imm, l); }
    void jne(Reg d, std::int32_t imm, Label l) { jump(BPF_JNE, d, imm, l); }
    void jlt(Reg d, std::int32_t imm, Label l) { jump(BPF_JLT, d, imm, l); }
    /// if d > s (unsigned) goto l
    void jgt(Reg d, Reg s, Label l) {
        fix_.emplace_back(code_.size(), l);
        put(BPF_JMP | BPF_JGT | BPF_X, d, s, 0, 0);
    }
    /// d = the 16-bit big-endian value d holds (host order from network order)
    void be16(Reg d) { put(BPF_ALU | BPF_END | BPF_TO_BE, d, r0, 0, 16); }

    std::vector<bpf_insn> finish() {
        for (const auto& [pc, l] : fix_) {
            code_[pc].off = static_cast<std::int16_t>(at_[l] - static_cast<int>(pc) - 1);
        }
        return std::move(code_);
    }

private:
    void alu64(std::uint8_t op, Reg d, Reg s, std::int32_t imm) {
        put(static_cast<std::uint8_t>(BPF_ALU64 | op), d, s, 0, imm);
    }
    void jump(std::uint8_t op, Reg d, std::int32_t imm, Label l) {
        fix_.emplace_back(code_.size(), l);
        put(static_cast<std::uint8_t>(BPF_JMP | op | BPF_K), d, r0, 0, imm);
    }
    void put(unsigned code, Reg d, Reg s, std::int16_t off, std::int32_t imm) {
        bpf_insn i{};
        i.code = static_cast<std::uint8_t>(code);
        i.dst_reg = d & 0xf;
        i.src_reg = s & 0xf;
        i.off = off;
        i.imm = imm;
        code_.push_back(i);
    }
    std::vector<bpf_insn> code_;
    std::vector<int> at_;
    std::vector<std::pair<std::size_t, Label>> fix_;
};

// Stack: fp-4 the maps' key (0); fp-48..-13 the hash input (addresses, then ports at fp-40
// for IPv4 or fp-16 for IPv6); fp-96.. the IP header's first bytes; fp-100 IPv4 header length;
// IPv6: fp-112 the next header, fp-120 its offset, fp-128 the payload's end, fp-136 the
// extension header's first 8 bytes.
constexpr std::int16_t kKey = -4, kIn = -48, kHdr = -96, kIhl = -100, kNext = -112, kOff = -120,
                       kEnd = -128, kExt = -136;
/// IPv6 extension headers the steering program walks before giving up (the address-only hash).
constexpr int kMaxExtHeaders = 6;

/// Loads `len` bytes at `off` from the Ethernet header into fp + dst: r0 = 0 on success (the
/// helper zeroes the destination on failure). off < 0: the offset is r2's (set by the caller).
void load(Asm& a, std::int32_t off, std::int16_t dst, std::int32_t len) {
    a.mov(Asm::r1, Asm::r6);
    if (off >= 0) {
        a.mov(Asm::r2, off);
    }
    a.mov(Asm::r3, Asm::fp);
    a.add(Asm::r3, dst);
    a.mov(Asm::r4, len);
    a.mov(Asm::r5, BPF_HDR_START_MAC);
    a.call(BPF_FUNC_skb_load_bytes_relative);
}

/// Jumps to `l` when the enabled types (the conf's first word) include one of `mask` (`any`),
/// or none of them (!`any`).
void if_types(Asm& a, std::uint32_t mask, bool any, Asm::Label l) {
    a.ldx(BPF_W, Asm::r1, Asm::r7, 0);
    a.band(Asm::r1, static_cast<std::int32_t>(mask));
    if (any) {
        a.jne(Asm::r1, 0, l);
    } else {
        a.jeq(Asm::r1, 0, l);
    }
}

std::vector<bpf_insn> program(int table_fd, int conf_fd) {
    using A = Asm;
    A a;
    const auto pick = a.label(), ret0 = a.label(), ipv4 = a.label(), ipv6 = a.label(),
               hash = a.label(), v4_l3 = a.label(), v6_l3 = a.label(), modq = a.label();
    // r6 ctx, r7 conf, r8 hash (0: no enabled type applies), r9 input bytes.
    a.mov(A::r6, A::r1);
    a.st(BPF_W, A::fp, kKey, 0);
    for (std::int16_t o = kIn; o < kIn + 36; o += 4) {
        a.st(BPF_W, A::fp, o, 0);
    }
    a.ld_map(A::r1, conf_fd);
    a.mov(A::r2, A::fp);
    a.add(A::r2, kKey);
    a.call(BPF_FUNC_map_lookup_elem);
    a.jeq(A::r0, 0, ret0);
    a.mov(A::r7, A::r0);
    a.mov(A::r8, 0);
    a.mov(A::r9, 0);
    // Untagged Ethernet: the EtherType (host-order load of network-order bytes).
    load(a, 12, kHdr, 2);
    a.jne(A::r0, 0, pick);
    a.ldx(BPF_H, A::r1, A::fp, kHdr);
    a.jeq(A::r1, htons(0x0800), ipv4);
    a.jeq(A::r1, htons(0x86dd), ipv6);
    a.ja(pick);

    // IPv4: version 4, IHL >= 5; addresses; ports for unfragmented TCP with IPV4_TCP on.
    a.bind(ipv4);
    if_types(a, w::XEN_NETIF_CTRL_HASH_TYPE_IPV4 | w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, false,
             pick);
    load(a, 14, kHdr, 20);
    a.jne(A::r0, 0, pick);
    a.ldx(BPF_B, A::r1, A::fp, kHdr);
    a.mov(A::r2, A::r1);
    a.rsh(A::r2, 4);
    a.jne(A::r2, 4, pick);
    a.band(A::r1, 0xf);
    a.jlt(A::r1, 5, pick);
    a.lsh(A::r1, 2);
    a.stx(BPF_W, A::fp, kIhl, A::r1);
    a.ldx(BPF_W, A::r2, A::fp, kHdr + 12);
    a.stx(BPF_W, A::fp, kIn, A::r2);
    a.ldx(BPF_W, A::r2, A::fp, kHdr + 16);
    a.stx(BPF_W, A::fp, kIn + 4, A::r2);
    a.mov(A::r9, 8);
    if_types(a, w::XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, false, v4_l3);
    a.ldx(BPF_B, A::r1, A::fp, kHdr + 9);
    a.jne(A::r1, 6, v4_l3);
    a.ldx(BPF_H, A::r1, A::fp, kHdr + 6);
    a.band(A::r1, htons(0x3fff));  // MF or an offset: a fragment
    a.jne(A::r1, 0, v4_l3);
    a.ldx(BPF_W, A::r2, A::fp, kIhl);
    a.add(A::r2, 14);
    a.mov(A::r1, A::r6);
    a.mov(A::r3, A::fp);
    a.add(A::r3, kIn + 8);
    a.mov(A::r4, 4);
    a.mov(A::r5, BPF_HDR_START_MAC);
    a.call(BPF_FUNC_skb_load_bytes_relative);  // past the end: zeroed (Linux: ports 0)
    a.mov(A::r9, 12);
    a.ja(hash);
    a.bind(v4_l3);
    if_types(a, w::XEN_NETIF_CTRL_HASH_TYPE_IPV4, true, hash);
    a.ja(pick);

    // IPv6: version 6; addresses; ports when TCP follows the fixed header and IPV6_TCP is on.
    a.bind(ipv6);
    if_types(a, w::XEN_NETIF_CTRL_HASH_TYPE_IPV6 | w::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, false,
             pick);
    load(a, 14, kHdr, 8);
    a.jne(A::r0, 0, pick);
    a.ldx(BPF_B, A::r1, A::fp, kHdr);
    a.rsh(A::r1, 4);
    a.jne(A::r1, 6, pick);
    load(a, 22, kIn, 32);
    a.jne(A::r0, 0, pick);
    a.mov(A::r9, 32);
    if_types(a, w::XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, false, v6_l3);
    // As netif_find_l4: hop-by-hop, routing, destination options, AH and atomic fragment
    // headers walked (each inside the payload length and the frame), a fragment has no L4.
    a.ldx(BPF_B, A::r1, A::fp, kHdr + 6);
    a.stx(BPF_DW, A::fp, kNext, A::r1);
    a.mov(A::r1, 54);
    a.stx(BPF_DW, A::fp, kOff, A::r1);
    a.ldx(BPF_H, A::r1, A::fp, kHdr + 4);
    a.be16(A::r1);
    a.add(A::r1, 54);
    a.stx(BPF_DW, A::fp, kEnd, A::r1);
    const auto v6_tcp = a.label();
    for (int i = 0; i <= kMaxExtHeaders; ++i) {
        const auto ext = a.label(), ah = a.label(), frag = a.label(), next = a.label();
        a.ldx(BPF_DW, A::r1, A::fp, kNext);
        a.jeq(A::r1, 6, v6_tcp);
        if (i == kMaxExtHeaders) {
            a.ja(v6_l3);
            break;
        }
        a.jeq(A::r1, 0, ext);
        a.jeq(A::r1, 43, ext);
        a.jeq(A::r1, 60, ext);
        a.jeq(A::r1, 51, ah);
        a.jeq(A::r1, 44, frag);
        a.ja(v6_l3);
        // Each: its first 8 bytes inside the payload and the frame, then the next offset.
        for (const auto l : {ext, ah, frag}) {
            a.bind(l);
            a.ldx(BPF_DW, A::r2, A::fp, kOff);
            a.mov(A::r3, A::r2);
            a.add(A::r3, 8);
            a.ldx(BPF_DW, A::r4, A::fp, kEnd);
            a.jgt(A::r3, A::r4, v6_l3);
            load(a, -1, kExt, 8);
            a.jne(A::r0, 0, v6_l3);
            a.ldx(BPF_B, A::r1, A::fp, kExt);
            a.stx(BPF_DW, A::fp, kNext, A::r1);
            a.ldx(BPF_DW, A::r2, A::fp, kOff);
            if (l == frag) {
                a.ldx(BPF_H, A::r1, A::fp, kExt + 2);
                a.band(A::r1, htons(0xfff9));  // an offset or MF: a fragment
                a.jne(A::r1, 0, v6_l3);
                a.add(A::r2, 8);
            } else {
                a.ldx(BPF_B, A::r1, A::fp, kExt + 1);
                a.add(A::r1, l == ah ? 2 : 1);
                a.lsh(A::r1, l == ah ? 2 : 3);
                a.add(A::r2, A::r1);
            }
            a.stx(BPF_DW, A::fp, kOff, A::r2);
            a.ja(next);
        }
        a.bind(next);
    }
    // TCP at off: inside the payload and not past the frame (its byte before is in it), the
    // ports zeroed when past the end.
    a.bind(v6_tcp);
    a.ldx(BPF_DW, A::r2, A::fp, kOff);
    a.ldx(BPF_DW, A::r4, A::fp, kEnd);
    a.jgt(A::r2, A::r4, v6_l3);
    a.add(A::r2, -1);
    load(a, -1, kExt, 1);
    a.jne(A::r0, 0, v6_l3);
    a.ldx(BPF_DW, A::r2, A::fp, kOff);
    load(a, -1, kIn + 32, 4);
    a.mov(A::r9, 36);
    a.ja(hash);
    a.bind(v6_l3);
    if_types(a, w::XEN_NETIF_CTRL_HASH_TYPE_IPV6, true, hash);
    a.ja(pick);

    // Toeplitz: the XOR of table[i][input[i]] over the r9 input bytes.
    a.bind(hash);
    a.ld_map(A::r1, table_fd);
    a.mov(A::r2, A::fp);
    a.add(A::r2, kKey);
    a.call(BPF_FUNC_map_lookup_elem);
    a.jeq(A::r0, 0, pick);
    for (std::int32_t i = 0; i < static_cast<std::int32_t>(SteeringProgram::kPositions); ++i) {
        if (i == 8 || i == 12 || i == 32) {
            a.jeq(A::r9, i, pick);
        }
        a.ldx(BPF_B, A::r1, A::fp, static_cast<std::int16_t>(kIn + i));
        a.lsh(A::r1, 2);
        a.mov(A::r2, A::r0);
        a.add(A::r2, i * 1024);
        a.add(A::r2, A::r1);
        a.ldx(BPF_W, A::r1, A::r2, 0);
        a.bxor(A::r8, A::r1);
    }

    // SPEC: xenvif_select_queue: mapping[hash % size], or hash % queues.
    a.bind(pick);
    a.ldx(BPF_W, A::r1, A::r7, kConfSize);
    a.jeq(A::r1, 0, modq);
    a.mov(A::r2, A::r8);
    a.mod32(A::r2, A::r1);
    a.band(A::r2, HashSettings::kMaxMapping - 1);  // < size <= 128 already; for the verifier
    a.lsh(A::r2, 2);
    a.mov(A::r3, A::r7);
    a.add(A::r3, A::r2);
    a.ldx(BPF_W, A::r0, A::r3, kConfMapping);
    a.exit();
    a.bind(modq);
    a.ldx(BPF_W, A::r1, A::r7, kConfQueues);
    a.jeq(A::r1, 0, ret0);
    a.mov(A::r0, A::r8);
    a.mod32(A::r0, A::r1);
    a.exit();
    a.bind(ret0);
    a.mov(A::r0, 0);
    a.exit();
    return a.finish();
}

}  // namespace

Result<SteeringProgram> SteeringProgram::create() noexcept {
    auto table = array_map(static_cast<std::uint32_t>(kTableBytes));
    if (!table) {
        return fail(table.error());
    }
    auto conf = array_map(sizeof(SteerConf));
    if (!conf) {
        return fail(conf.error());
    }
    std::vector<bpf_insn> code;
    try {
        code = program(table->get(), conf->get());
    } catch (...) {
        return fail_errno(ENOMEM);
    }
    static char license[] = "Dual MIT/GPL";
    bpf_attr a{};
    a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    a.insns = reinterpret_cast<std::uint64_t>(code.data());
    a.insn_cnt = static_cast<std::uint32_t>(code.size());
    a.license = reinterpret_cast<std::uint64_t>(license);
    const long fd = sys_bpf(BPF_PROG_LOAD, a);
    if (fd < 0) {
        return fail_errno();
    }
    return SteeringProgram(UniqueFd(static_cast<int>(fd)), std::move(*table), std::move(*conf));
}

Result<void> SteeringProgram::update(const HashSettings& s, unsigned queues) noexcept {
    if (!table_set_ || key_ != s.key) {
        // table[i][b]: the hash of an input whose only non-zero byte is b at position i (the
        // Toeplitz hash is linear in its input). The 32 key bits at bit k: the window.
        auto key_bit = [&](std::size_t k) -> std::uint32_t {
            return k / 8 < s.key.size() ? (s.key[k / 8] >> (7 - k % 8)) & 1U : 0U;
        };
        std::vector<std::uint32_t> table;
        try {
            table.resize(kTableBytes / sizeof(std::uint32_t));
        } catch (...) {
            return fail_errno(ENOMEM);
        }
        for (std::size_t i = 0; i < kPositions; ++i) {
            std::uint32_t win[8];
            for (std::size_t j = 0; j < 8; ++j) {
                std::uint32_t v = 0;
                for (std::size_t k = 0; k < 32; ++k) {
                    v = v << 1 | key_bit(i * 8 + j + k);
                }
                win[j] = v;
            }
            for (std::uint32_t b = 0; b < 256; ++b) {
                std::uint32_t h = 0;
                for (std::size_t j = 0; j < 8; ++j) {
                    if ((b >> (7 - j)) & 1U) {
                        h ^= win[j];
                    }
                }
                table[i * 256 + b] = h;
            }
        }
        HV_TRY(map_put(table_.get(), table.data()));
        key_ = s.key;
        table_set_ = true;
    }
    SteerConf c;
    c.flags = s.algorithm == w::XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ ? s.flags : 0;
    c.queues = queues;
    c.size = s.mapping_size;
    std::memcpy(c.mapping, s.mapping.data(), sizeof c.mapping);
    return map_put(conf_.get(), &c);
}

Result<std::uint32_t> SteeringProgram::test_run(
    std::span<const std::uint8_t> frame) const noexcept {
    bpf_attr a{};
    a.test.prog_fd = static_cast<std::uint32_t>(prog_.get());
    a.test.data_in = reinterpret_cast<std::uint64_t>(frame.data());
    a.test.data_size_in = static_cast<std::uint32_t>(frame.size());
    a.test.repeat = 1;
    if (sys_bpf(BPF_PROG_TEST_RUN, a) != 0) {
        return fail_errno();
    }
    return a.test.retval;
}

}  // namespace hv::net
