// Node tree, permissions parsing and transaction views. Layer: L1 (xenstore).
#include "store.hpp"

#include <cerrno>
#include <charconv>

#include "hv/assert.hpp"

namespace hv::xs::detail {

Result<Perm> parse_perm(std::string_view s) noexcept {
    if (s.size() < 2) {
        return fail_errno(EINVAL);
    }
    Perm p;
    switch (s[0]) {
        case 'n':
            p.access = PERM_NONE;
            break;
        case 'r':
            p.access = PERM_READ;
            break;
        case 'w':
            p.access = PERM_WRITE;
            break;
        case 'b':
            p.access = PERM_READ | PERM_WRITE;
            break;
        default:
            return fail_errno(EINVAL);
    }
    unsigned id = 0;
    const char* first = s.data() + 1;
    const char* last = s.data() + s.size();
    auto [ptr, ec] = std::from_chars(first, last, id);
    if (ec != std::errc() || ptr != last || id > 0xffff) {
        return fail_errno(EINVAL);
    }
    p.id = static_cast<std::uint16_t>(id);
    return p;
}

void append_perm(std::string& out, Perm p) {
    static constexpr char letters[4] = {'n', 'r', 'w', 'b'};
    out += letters[p.access & 3];
    char buf[8];
    auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, p.id);
    (void)ec;
    out.append(buf, ptr);
}

std::size_t node_size(const Node& n) noexcept {
    std::size_t sz = n.value.size() + n.perms.size() * 4;  // 4: sizeof(struct xs_permissions)-ish
    for (const auto& c : n.children) {
        sz += c.size() + 1;
    }
    return sz;
}

Store::Store() {
    Node root;
    root.perms = {Perm{0, PERM_NONE}};
    root.gen = gen++;
    nodes.emplace("/", std::move(root));
    usage[0].nodes = 1;
    usage[0].bytes = 1;
}

const Node* View::get(const std::string& path) {
    if (tx_ != nullptr) {
        if (auto it = tx_->overlay.find(path); it != tx_->overlay.end()) {
            return it->second ? &*it->second : nullptr;
        }
    }
    auto it = s_.nodes.find(path);
    const Node* n = it == s_.nodes.end() ? nullptr : &it->second;
    if (tx_ != nullptr) {
        tx_->seen.try_emplace(path, n ? n->gen : 0);
    }
    return n;
}

const Node* View::peek(const std::string& path) const {
    if (tx_ != nullptr) {
        if (auto it = tx_->overlay.find(path); it != tx_->overlay.end()) {
            return it->second ? &*it->second : nullptr;
        }
    }
    auto it = s_.nodes.find(path);
    return it == s_.nodes.end() ? nullptr : &it->second;
}

Node* View::modify(const std::string& path) {
    if (tx_ == nullptr) {
        auto it = s_.nodes.find(path);
        HV_ASSERT(it != s_.nodes.end());
        it->second.gen = s_.gen++;
        return &it->second;
    }
    if (auto it = tx_->overlay.find(path); it != tx_->overlay.end()) {
        HV_ASSERT(it->second.has_value());
        return &*it->second;
    }
    auto it = s_.nodes.find(path);
    HV_ASSERT(it != s_.nodes.end());
    tx_->seen.try_emplace(path, it->second.gen);
    auto [oit, inserted] = tx_->overlay.emplace(path, it->second);
    (void)inserted;
    return &*oit->second;
}

void View::create(const std::string& path, Node n) {
    if (tx_ == nullptr) {
        n.gen = s_.gen++;
        auto [it, inserted] = s_.nodes.emplace(path, std::move(n));
        (void)it;
        HV_ASSERT(inserted);
        return;
    }
    tx_->seen.try_emplace(path, 0);
    tx_->overlay[path] = std::move(n);
}

void View::erase(const std::string& path) {
    if (tx_ == nullptr) {
        s_.nodes.erase(path);
        return;
    }
    if (auto it = s_.nodes.find(path); it != s_.nodes.end()) {
        tx_->seen.try_emplace(path, it->second.gen);
    }
    tx_->overlay[path] = std::nullopt;
}

Usage View::usage(std::uint16_t domid) const {
    Usage u;
    if (auto it = s_.usage.find(domid); it != s_.usage.end()) {
        u = it->second;
    }
    if (tx_ != nullptr) {
        if (auto it = tx_->usage_delta.find(domid); it != tx_->usage_delta.end()) {
            u.nodes += it->second.nodes;
            u.bytes += it->second.bytes;
        }
    }
    return u;
}

void View::add_usage(std::uint16_t domid, std::int64_t nodes, std::int64_t bytes) {
    Usage& u = tx_ != nullptr ? tx_->usage_delta[domid] : s_.usage[domid];
    u.nodes += nodes;
    u.bytes += bytes;
}

Result<void> commit(Store& s, Transaction& tx) {
    for (const auto& [path, gen] : tx.seen) {
        auto it = s.nodes.find(path);
        const std::uint64_t now = it == s.nodes.end() ? 0 : it->second.gen;
        if (now != gen) {
            return fail_errno(EAGAIN);
        }
    }
    for (auto& [path, node] : tx.overlay) {
        if (!node) {
            s.nodes.erase(path);
            continue;
        }
        node->gen = s.gen++;
        s.nodes.insert_or_assign(path, std::move(*node));
    }
    for (const auto& [domid, d] : tx.usage_delta) {
        Usage& u = s.usage[domid];
        u.nodes += d.nodes;
        u.bytes += d.bytes;
    }
    return {};
}

}  // namespace hv::xs::detail
