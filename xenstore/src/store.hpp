// The node tree and transaction views over it. Layer: L1 (xenstore), internal to the core.
// Not thread-safe; the core's caller serialises access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hv/expected.hpp"

namespace hv::xs::detail {

/// Access bits (internal). SPEC: xs_lib.h XS_PERM_READ/WRITE; OWNER is our own marker.
inline constexpr std::uint8_t PERM_NONE = 0;
inline constexpr std::uint8_t PERM_READ = 1;
inline constexpr std::uint8_t PERM_WRITE = 2;
inline constexpr std::uint8_t PERM_OWNER = 4;

struct Perm {
    std::uint16_t id = 0;
    std::uint8_t access = PERM_NONE;
    friend bool operator==(const Perm&, const Perm&) = default;
};
using Perms = std::vector<Perm>;

/// Parses one "r5"/"w0"/"b3"/"n1" entry. Errors: EINVAL.
Result<Perm> parse_perm(std::string_view s) noexcept;
/// Appends the wire form of `p` ("b3") without a NUL.
void append_perm(std::string& out, Perm p);

struct Node {
    std::string value;
    Perms perms;                        // never empty; perms[0].id is the owner
    std::vector<std::string> children;  // leaf names, creation order
    std::uint64_t gen = 0;              // store generation of the last change
};

/// Bytes a node counts against the node-size quota.
std::size_t node_size(const Node& n) noexcept;
/// Bytes a node counts against its owner's memory quota.
inline std::size_t node_memory(std::string_view path, const Node& n) noexcept {
    return path.size() + n.value.size();
}

struct Usage {
    std::int64_t nodes = 0;
    std::int64_t bytes = 0;
};

struct Store {
    Store();
    std::unordered_map<std::string, Node> nodes;
    std::uint64_t gen = 1;
    std::map<std::uint16_t, Usage> usage;  // by owner domid
};

/// A transaction: private copies of the nodes it changed plus the generation of every node it
/// looked at. SPEC: tools/xenstored/transaction.c — commit fails (EAGAIN) if any of those nodes
/// changed in the store since.
struct Transaction {
    std::uint32_t id = 0;
    std::unordered_map<std::string, std::optional<Node>> overlay;  // nullopt: deleted
    std::unordered_map<std::string, std::uint64_t> seen;           // path -> gen (0: absent)
    std::map<std::uint16_t, Usage> usage_delta;
};

/// Reads and writes either the store directly (tx == nullptr) or through a transaction.
class View {
public:
    View(Store& s, Transaction* tx) noexcept : s_(s), tx_(tx) {}

    /// The node at `path`, or nullptr. Pointers stay valid until the node is erased.
    const Node* get(const std::string& path);
    /// Like get() but not recorded in the transaction (for metadata such as event filtering).
    const Node* peek(const std::string& path) const;
    /// A mutable node that exists (get() returned it); bumps its generation (direct mode).
    Node* modify(const std::string& path);
    /// Adds a node that does not exist (get() returned nullptr).
    void create(const std::string& path, Node n);
    /// Removes an existing node (not its children, not its parent's child entry).
    void erase(const std::string& path);
    /// Owner usage as seen by this view.
    Usage usage(std::uint16_t domid) const;
    void add_usage(std::uint16_t domid, std::int64_t nodes, std::int64_t bytes);
    bool in_transaction() const noexcept { return tx_ != nullptr; }

private:
    Store& s_;
    Transaction* tx_;
};

/// Applies a transaction to the store. Errors: EAGAIN (a node it saw changed since).
Result<void> commit(Store& s, Transaction& tx);

}  // namespace hv::xs::detail
