// The XenStore server core: message framing, table dispatch, handlers, watches, transactions,
// domains and quotas. Layer: L1 (xenstore). Single-threaded; Server holds a lock around it.
// SPEC: xen-abi.md §4, tools/xenstored/{core,watch,transaction,domain}.c (behaviour only).
#include "xenstore/core.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "hv/assert.hpp"
#include "hv/log.hpp"
#include "store.hpp"
#include "xenstore/wire.hpp"

namespace hv::xs {

using namespace detail;

namespace {

constexpr std::string_view kIntroduce = "@introduceDomain";
constexpr std::string_view kRelease = "@releaseDomain";
constexpr std::uint32_t kSupportedFeatures = XENSTORE_SERVER_FEATURE_WATCHDEPTH;

std::string domain_path(unsigned domid) { return "/local/domain/" + std::to_string(domid); }

/// Decimal without sign, fitting `max`. Errors: EINVAL.
Result<std::uint64_t> parse_uint(std::string_view s, std::uint64_t max) noexcept {
    std::uint64_t v = 0;
    if (s.empty()) {
        return fail_errno(EINVAL);
    }
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size() || v > max) {
        return fail_errno(EINVAL);
    }
    return v;
}

Result<std::int64_t> parse_int(std::string_view s) noexcept {
    std::int64_t v = 0;
    if (s.empty()) {
        return fail_errno(EINVAL);
    }
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size()) {
        return fail_errno(EINVAL);
    }
    return v;
}

Result<std::uint16_t> parse_domid(std::string_view s) noexcept {
    auto v = parse_uint(s, DOMID_FIRST_RESERVED - 1);
    if (!v) {
        return fail(v.error());
    }
    return static_cast<std::uint16_t>(*v);
}

/// Up to 4 NUL-terminated arguments.
struct Args {
    std::string_view v[4];
    unsigned n = 0;
};

/// Splits a payload made only of NUL-terminated strings. Errors: EINVAL (a trailing string
/// without NUL, or more than `max` strings).
Result<Args> split_args(std::string_view payload, unsigned max) noexcept {
    Args a;
    if (!payload.empty() && payload.back() != '\0') {
        return fail_errno(EINVAL);
    }
    while (!payload.empty()) {
        const auto nul = payload.find('\0');
        if (a.n == max || a.n == 4) {
            return fail_errno(EINVAL);
        }
        a.v[a.n++] = payload.substr(0, nul);
        payload.remove_prefix(nul + 1);
    }
    return a;
}

Result<Args> exact_args(std::string_view payload, unsigned n) noexcept {
    auto a = split_args(payload, n);
    if (!a) {
        return a;
    }
    if (a->n != n) {
        return fail_errno(EINVAL);
    }
    return a;
}

bool valid_path_chars(std::string_view p) noexcept {
    for (char c : p) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '-' || c == '/' || c == '_' || c == '@';
        if (!ok) {
            return false;
        }
    }
    return true;
}

std::string parent_of(std::string_view path) {
    const auto slash = path.rfind('/');
    if (slash == 0 || slash == std::string_view::npos) {
        return "/";
    }
    return std::string(path.substr(0, slash));
}

std::string_view basename_of(std::string_view path) noexcept {
    return path.substr(path.rfind('/') + 1);
}

std::string child_path(std::string_view parent, std::string_view name) {
    std::string p(parent);
    if (p != "/") {
        p += '/';
    }
    p += name;
    return p;
}

/// True if `path` is `base` or below it; `depth` (if set) limits how far below.
bool path_matches(std::string_view base, std::string_view path, std::optional<unsigned> depth) {
    if (path.size() < base.size() || path.compare(0, base.size(), base) != 0) {
        return false;
    }
    std::string_view rest = path.substr(base.size());
    if (!rest.empty() && base != "/") {
        if (rest[0] != '/') {
            return false;
        }
        rest.remove_prefix(1);
    }
    if (!depth) {
        return true;
    }
    if (rest.empty()) {
        return true;
    }
    unsigned levels = 1;
    for (char c : rest) {
        levels += c == '/' ? 1u : 0u;
    }
    return levels <= *depth;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Watch {
    std::string given;  // as the client wrote it (relative paths stay relative in events)
    std::string abs;    // canonical absolute path or special @ path
    std::string token;
    std::optional<unsigned> depth;
    bool relative = false;
    std::uint64_t seq = 0;  // registration order, server-wide
};

struct Event {
    std::string path;    // absolute
    Perms perms;         // of the node, for read-permission filtering
    bool exact = false;
    Perms parent_perms;  // of its parent (empty for /): readable parent also lets it through
};

struct Conn {
    ConnId id = 0;
    std::uint16_t domid = 0;
    bool privileged = false;
    bool doomed = false;
    std::string home;
    std::string in;  // unparsed input
    std::optional<Core::Clock::time_point> partial_since;
    std::string out;  // queued output; out_off bytes of it already sent
    std::size_t out_off = 0;
    std::uint32_t out_msgs = 0;  // whole messages in `out` not completely sent yet
    std::size_t out_next_end = 0;  // offset in `out` where the first unsent message ends
    bool throttled = false;        // stopped reading: its domain has too much unconsumed output
    std::map<std::uint64_t, Watch> watches;      // by Watch::seq: registration order
    std::unordered_set<std::string> watch_keys;  // abs + NUL + token: duplicate check in O(1)
    std::map<std::uint32_t, std::unique_ptr<Transaction>> txs;
    std::map<std::uint32_t, std::vector<Event>> tx_events;
    std::uint32_t next_tx = 1;
};

struct Domain {
    bool introduced = false;
    std::uint32_t features = kSupportedFeatures;
    std::optional<std::uint16_t> target;
    std::optional<Quotas> quotas;
};

struct Request {
    MsgType type;
    std::uint32_t req_id;
    std::uint32_t tx_id;
    std::string_view payload;
};

struct Core::Impl {
    using Handler = Result<void> (Impl::*)(Conn&, const Request&);
    enum Flags : unsigned {
        NONE = 0,
        PRIV = 1,      // privileged connections only (else EACCES)
        TX = 2,        // honours tx_id (unknown id: ENOENT)
    };
    struct Entry {
        const char* name;
        Handler fn;
        unsigned flags;
    };
    static const Entry table[static_cast<std::size_t>(MsgType::XS_TYPE_COUNT)];

    ServerConfig cfg;
    Store store;
    std::map<std::uint16_t, Domain> domains;
    std::unordered_map<ConnId, std::unique_ptr<Conn>> conns;
    // Watches on ordinary paths by their absolute path: an event at /a/b/c looks up /a/b/c,
    // /a/b, /a and / instead of scanning every watch of every connection. @ paths are not
    // indexed (fire_special scans; they fire only on domain introduction and release).
    struct WatchRef {
        Conn* conn;
        std::uint64_t seq;
    };
    struct SvHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view v) const noexcept {
            return std::hash<std::string_view>{}(v);
        }
    };
    std::unordered_map<std::string, std::vector<WatchRef>, SvHash, std::equal_to<>> watch_index;
    std::uint64_t next_watch_seq = 1;
    struct Match {
        std::uint64_t seq;
        Conn* conn;
        const Watch* watch;
    };
    std::vector<Match> matches;  // fire()'s scratch, reused
    std::string event_buf;       // send_event()'s scratch, reused
    std::map<std::string, Perms, std::less<>> special;
    ConnId next_id = 1;
    std::string reply;                 // reused reply buffer
    std::vector<Event> pending;        // events of the current request, fired after its reply
    std::optional<Watch> initial_watch;  // WATCH: initial event after the OK reply
    Transaction* cur_tx = nullptr;     // transaction of the current request
    std::vector<ConnId> doomed;
    std::vector<ConnId> dirty;
    std::uint64_t misbehaving = 0;  // connections doomed for not reading their output
    // SPEC: xenstored domain.c ACC_OUTST — replies and watch events queued for an unprivileged
    // domain and not yet taken by it, summed over its connections; at the `outstanding` quota
    // its connections are no longer read until it consumes some.
    struct Outstanding {
        std::uint32_t queued = 0;     // messages
        std::uint32_t throttled = 0;  // connections of the domain waiting to be resumed
    };
    std::unordered_map<std::uint16_t, Outstanding> outstanding;
    std::vector<ConnId> resumed;
    std::uint64_t throttle_events = 0;  // times a connection was stopped by the quota

    explicit Impl(ServerConfig c) : cfg(std::move(c)) {
        domains[0].introduced = true;
        special.emplace(std::string(kIntroduce), Perms{Perm{0, PERM_NONE}});
        special.emplace(std::string(kRelease), Perms{Perm{0, PERM_NONE}});
        // The standard skeleton, owned by dom0 and readable by nobody else (as C xenstored's
        // initial tree; the toolstack grants access to per-domain homes).
        View v(store, nullptr);
        for (const char* p : {"/local", "/local/domain", "/tool"}) {
            (void)mkdir_path(nullptr, v, p);
        }
        pending.clear();
    }

    const Quotas& quotas_for(std::uint16_t domid) const {
        if (auto it = domains.find(domid); it != domains.end() && it->second.quotas) {
            return *it->second.quotas;
        }
        return cfg.quotas;
    }

    // ---- permissions -------------------------------------------------------------------------

    std::uint8_t access(const Conn* c, const Perms& p) const {
        if (c == nullptr || c->privileged) {
            return PERM_READ | PERM_WRITE | PERM_OWNER;
        }
        std::optional<std::uint16_t> target;
        if (auto it = domains.find(c->domid); it != domains.end()) {
            target = it->second.target;
        }
        auto me = [&](std::uint16_t id) { return id == c->domid || (target && id == *target); };
        if (me(p[0].id)) {
            return PERM_READ | PERM_WRITE | PERM_OWNER;
        }
        for (std::size_t i = 1; i < p.size(); ++i) {
            if (me(p[i].id)) {
                return p[i].access;
            }
        }
        return p[0].access;
    }

    /// The error for a node that is missing: EACCES if the caller could not see the nearest
    /// existing ancestor, ENOENT otherwise (do not leak what exists).
    std::error_code missing_error(const Conn& c, View& v, const std::string& path) {
        std::string p = path;
        while (p != "/") {
            p = parent_of(p);
            if (const Node* n = v.get(p)) {
                return errno_code((access(&c, n->perms) & PERM_READ) ? ENOENT : EACCES);
            }
        }
        return errno_code(ENOENT);
    }

    // ---- paths -------------------------------------------------------------------------------

    /// Resolves a client path. Errors: EINVAL (malformed, too long, @ where not allowed),
    /// ENOSPC (over the path-length quota below the caller's home).
    Result<std::string> canonical(const Conn& c, std::string_view p, bool allow_special) const {
        if (p.empty() || !valid_path_chars(p)) {
            return fail_errno(EINVAL);
        }
        if (p[0] == '@') {
            if (!allow_special || p.size() > XENSTORE_ABS_PATH_MAX) {
                return fail_errno(EINVAL);
            }
            return std::string(p);
        }
        std::string abs;
        if (p[0] == '/') {
            abs = p;
        } else {
            abs.reserve(c.home.size() + 1 + p.size());
            abs = c.home;
            abs += '/';
            abs += p;
        }
        if (abs.size() > XENSTORE_ABS_PATH_MAX || abs.find("//") != std::string::npos ||
            (abs.size() > 1 && abs.back() == '/')) {
            return fail_errno(EINVAL);
        }
        if (!c.privileged && abs.size() > c.home.size() &&
            abs.compare(0, c.home.size(), c.home) == 0 && abs[c.home.size()] == '/' &&
            abs.size() - c.home.size() - 1 > quotas_for(c.domid).path_max) {
            return fail_errno(ENOSPC);
        }
        return abs;
    }

    // ---- output ------------------------------------------------------------------------------

    void enqueue(Conn& c, MsgType type, std::uint32_t req_id, std::uint32_t tx_id,
                 std::string_view payload) {
        if (c.doomed) {
            return;
        }
        const std::size_t queued = c.out.size() - c.out_off;
        if (queued + sizeof(xsd_sockmsg) + payload.size() > cfg.max_output_bytes) {
            HV_LOG_RL(warn, "xenstore: conn %llu (dom%u) not reading its replies (%zu bytes queued);"
                            " disconnecting", static_cast<unsigned long long>(c.id), c.domid,
                      queued);
            doom(c);
            ++misbehaving;
            return;
        }
        if (c.out_off > 0 && c.out_off * 2 > c.out.size()) {
            c.out.erase(0, c.out_off);
            c.out_next_end -= c.out_off;
            c.out_off = 0;
        }
        const bool was_empty = c.out.size() == c.out_off;
        xsd_sockmsg h{static_cast<std::uint32_t>(type), req_id, tx_id,
                      static_cast<std::uint32_t>(payload.size())};
        c.out.append(reinterpret_cast<const char*>(&h), sizeof h);
        c.out.append(payload);
        if (c.out_msgs++ == 0) {
            c.out_next_end = c.out.size();
        }
        if (!c.privileged) {
            ++outstanding[c.domid].queued;
        }
        if (was_empty) {
            dirty.push_back(c.id);
        }
    }

    std::uint32_t outstanding_limit(std::uint16_t domid) const {
        return std::max<std::uint32_t>(1, quotas_for(domid).outstanding);
    }

    /// False when the connection's domain is at its `outstanding` quota (dom0: never).
    bool may_read(const Conn& c) const {
        if (c.privileged) {
            return true;
        }
        auto it = outstanding.find(c.domid);
        return it == outstanding.end() || it->second.queued < outstanding_limit(c.domid);
    }

    /// Marks `c` as stopped by the quota: it is listed by take_resumed() once it may read.
    void throttle(Conn& c) {
        if (!c.throttled) {
            c.throttled = true;
            ++outstanding[c.domid].throttled;
            ++throttle_events;
        }
    }

    /// `n` of the connection's queued messages were taken (or dropped): wake its domain's
    /// throttled connections if that brings the domain under the quota.
    void outstanding_done(Conn& c, std::uint32_t n) {
        if (c.privileged || n == 0) {
            return;
        }
        auto it = outstanding.find(c.domid);
        if (it == outstanding.end()) {
            return;
        }
        Outstanding& o = it->second;
        o.queued -= std::min(o.queued, n);
        if (o.throttled > 0 && o.queued < outstanding_limit(c.domid)) {
            for (auto& [id, other] : conns) {
                if (other->domid == c.domid && other->throttled) {
                    other->throttled = false;
                    resumed.push_back(id);
                }
            }
            o.throttled = 0;
        }
        if (o.queued == 0 && o.throttled == 0) {
            outstanding.erase(it);
        }
    }

    /// The first `n` bytes of the connection's output were sent.
    void consume(Conn& c, std::size_t n) {
        c.out_off += std::min(n, c.out.size() - c.out_off);
        std::uint32_t done = 0;
        while (c.out_msgs > 0 && c.out_off >= c.out_next_end) {
            --c.out_msgs;
            ++done;
            if (c.out_msgs > 0) {
                xsd_sockmsg h;
                std::memcpy(&h, c.out.data() + c.out_next_end, sizeof h);  // our own bytes
                c.out_next_end += sizeof h + h.len;
            }
        }
        if (c.out_off == c.out.size()) {
            c.out.clear();
            c.out_off = 0;
            c.out_next_end = 0;
        }
        outstanding_done(c, done);
    }

    /// Drops the connection, its queued output and its share of the domain's outstanding count.
    void forget(ConnId id) {
        auto it = conns.find(id);
        if (it == conns.end()) {
            return;
        }
        std::unique_ptr<Conn> c = std::move(it->second);
        conns.erase(it);
        drop_watches(*c);
        if (c->throttled) {
            c->throttled = false;
            if (auto o = outstanding.find(c->domid); o != outstanding.end() && o->second.throttled) {
                --o->second.throttled;
            }
        }
        outstanding_done(*c, c->out_msgs);
        std::erase(resumed, id);
    }

    void doom(Conn& c) {
        if (!c.doomed) {
            c.doomed = true;
            doomed.push_back(c.id);
        }
    }

    void send_error(Conn& c, const Request& r, int err) {
        const std::string_view name = xsd_error_name(err);
        char buf[16];
        std::memcpy(buf, name.data(), name.size());
        buf[name.size()] = '\0';
        enqueue(c, MsgType::XS_ERROR, r.req_id, r.tx_id, std::string_view(buf, name.size() + 1));
    }

    // ---- watches -----------------------------------------------------------------------------

    void send_event(Conn& c, const Watch& w, std::string_view epath) {
        event_buf.clear();
        event_buf.append(epath);
        event_buf += '\0';
        event_buf.append(w.token);
        event_buf += '\0';
        enqueue(c, MsgType::XS_WATCH_EVENT, 0, 0, event_buf);
    }

    void index_watch(Conn& c, const Watch& w) {
        if (w.abs[0] != '@') {
            watch_index[w.abs].push_back(WatchRef{&c, w.seq});
        }
    }

    void unindex_watch(const Conn& c, const Watch& w) {
        auto it = watch_index.find(w.abs);
        if (it == watch_index.end()) {
            return;
        }
        std::erase_if(it->second,
                      [&](const WatchRef& r) { return r.conn == &c && r.seq == w.seq; });
        if (it->second.empty()) {
            watch_index.erase(it);
        }
    }

    void drop_watches(Conn& c) {
        for (const auto& [seq, w] : c.watches) {
            unindex_watch(c, w);
        }
        c.watches.clear();
        c.watch_keys.clear();
    }

    void fire(const Event& e) {
        if (watch_index.empty()) {
            return;
        }
        matches.clear();
        auto collect = [&](std::string_view key) {
            auto it = watch_index.find(key);
            if (it == watch_index.end()) {
                return;
            }
            for (const WatchRef& r : it->second) {
                if (r.conn->doomed) {
                    continue;
                }
                auto wit = r.conn->watches.find(r.seq);
                HV_ASSERT(wit != r.conn->watches.end());
                const Watch& w = wit->second;
                if (e.exact || path_matches(w.abs, e.path, w.depth)) {  // depth limits
                    matches.push_back(Match{r.seq, r.conn, &w});
                }
            }
        };
        // The watches on the path itself and, unless the event is exact, on every ancestor.
        std::string_view p = e.path;
        collect(p);
        while (!e.exact && p != "/") {
            const auto slash = p.rfind('/');
            p = slash == 0 ? std::string_view("/") : p.substr(0, slash);
            collect(p);
        }
        if (matches.size() > 1) {
            // Each connection sees its events in the order it registered the watches.
            std::sort(matches.begin(), matches.end(),
                      [](const Match& a, const Match& b) { return a.seq < b.seq; });
        }
        for (const Match& m : matches) {
            Conn& c = *m.conn;
            // SPEC: xenstored watch.c — the node or its parent must be readable.
            const bool readable = (access(&c, e.perms) & PERM_READ) != 0 ||
                                  (!e.parent_perms.empty() &&
                                   (access(&c, e.parent_perms) & PERM_READ) != 0);
            if (!readable) {
                continue;
            }
            std::string_view epath = e.path;
            if (m.watch->relative && epath.size() > c.home.size() + 1) {
                epath.remove_prefix(c.home.size() + 1);
            }
            send_event(c, *m.watch, epath);
        }
    }

    /// @introduceDomain / @releaseDomain for `domid`.
    void fire_special(std::string_view base, std::uint16_t domid) {
        const Perms& perms = special.find(base)->second;
        const std::string sub = std::string(base) + "/" + std::to_string(domid);
        for (auto& [id, cp] : conns) {
            Conn& c = *cp;
            if (c.doomed || !(access(&c, perms) & PERM_READ)) {
                continue;
            }
            for (const auto& [seq, w] : c.watches) {
                if (w.abs == base) {
                    send_event(c, w, (w.depth && *w.depth >= 1) ? std::string_view(sub) : base);
                } else if (w.abs == sub) {
                    send_event(c, w, sub);
                }
            }
        }
    }

    /// An event for `path` whose node now has `perms`, with its parent's permissions.
    Event make_event(View& v, const std::string& path, const Perms& perms, bool exact = false) {
        Event e{path, perms, exact, {}};
        if (path != "/") {
            if (const Node* p = v.peek(parent_of(path))) {
                e.parent_perms = p->perms;
            }
        }
        return e;
    }

    void queue_event(Conn& c, const Request& r, Event e) {
        if (cur_tx != nullptr) {
            c.tx_events[r.tx_id].push_back(std::move(e));
        } else {
            pending.push_back(std::move(e));
        }
    }

    std::size_t domain_count(std::uint16_t domid, bool watches) const {
        std::size_t n = 0;
        for (const auto& [id, c] : conns) {
            if (c->domid == domid) {
                n += watches ? c->watches.size() : c->txs.size();
            }
        }
        return n;
    }

    // ---- node creation / removal -------------------------------------------------------------

    /// Creates `path` and any missing parents (empty values). `c` nullptr = the server itself.
    /// Returns the created (or existing) node path's node. Errors: EACCES, ENOSPC, ENOENT.
    Result<Node*> mkdir_path(const Conn* c, View& v, const std::string& path) {
        if (v.get(path) != nullptr) {
            return v.modify(path);
        }
        // Find the nearest existing ancestor; it needs write access.
        std::vector<std::string> missing{path};
        std::string anc = parent_of(path);
        while (v.get(anc) == nullptr) {
            missing.push_back(anc);
            anc = parent_of(anc);
        }
        const Node* top = v.get(anc);
        if (!(access(c, top->perms) & PERM_WRITE)) {
            return fail_errno(EACCES);
        }
        const bool unpriv = c != nullptr && !c->privileged;
        if (unpriv) {
            const Quotas& q = quotas_for(c->domid);
            const Usage u = v.usage(c->domid);
            std::size_t bytes = 0;
            for (const auto& m : missing) {
                bytes += m.size();
            }
            if (u.nodes + static_cast<std::int64_t>(missing.size()) > q.nodes ||
                u.bytes + static_cast<std::int64_t>(bytes) > q.memory) {
                return fail_errno(ENOSPC);
            }
            const std::size_t grown = node_size(*top) + basename_of(missing.back()).size() + 1;
            if (grown > q.node_size) {
                return fail_errno(ENOSPC);
            }
        }
        // Create top-down: each new node inherits its parent's permissions; an unprivileged
        // creator becomes the owner.
        Perms perms = top->perms;
        if (unpriv) {
            perms[0].id = c->domid;
        }
        std::string parent = anc;
        for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
            Node* pn = v.modify(parent);
            pn->children.emplace_back(basename_of(*it));
            Node n;
            n.perms = perms;
            v.add_usage(perms[0].id, 1, static_cast<std::int64_t>(node_memory(*it, n)));
            v.create(*it, std::move(n));
            parent = *it;
        }
        return v.modify(path);
    }

    /// Removes `path` and its subtree, queueing the events. `path` exists.
    void remove_tree(Conn& c, const Request& r, View& v, const std::string& path) {
        // Collect the subtree first (pre-order), then erase bottom-up.
        std::vector<std::string> order{path};
        for (std::size_t i = 0; i < order.size(); ++i) {
            const Node* n = v.get(order[i]);
            for (const auto& ch : n->children) {
                order.push_back(child_path(order[i], ch));
            }
        }
        for (std::size_t i = 0; i < order.size(); ++i) {
            const Node* n = v.get(order[i]);
            queue_event(c, r, make_event(v, order[i], n->perms, i != 0));
            v.add_usage(n->perms[0].id, -1,
                        -static_cast<std::int64_t>(node_memory(order[i], *n)));
        }
        for (auto it = order.rbegin(); it != order.rend(); ++it) {
            v.erase(*it);
        }
        Node* parent = v.modify(parent_of(path));
        const std::string_view name = basename_of(path);
        for (auto it = parent->children.begin(); it != parent->children.end(); ++it) {
            if (*it == name) {
                parent->children.erase(it);
                break;
            }
        }
    }

    // ---- handlers ----------------------------------------------------------------------------

    void ok() { reply.assign("OK", 3); }

    Result<void> do_read(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], false);
        HV_TRY(path);
        View v(store, cur_tx);
        const Node* n = v.get(*path);
        if (n == nullptr) {
            return fail(missing_error(c, v, *path));
        }
        if (!(access(&c, n->perms) & PERM_READ)) {
            return fail_errno(EACCES);
        }
        reply = n->value;
        return {};
    }

    Result<void> do_directory(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], false);
        HV_TRY(path);
        View v(store, cur_tx);
        const Node* n = v.get(*path);
        if (n == nullptr) {
            return fail(missing_error(c, v, *path));
        }
        if (!(access(&c, n->perms) & PERM_READ)) {
            return fail_errno(EACCES);
        }
        reply.clear();
        for (const auto& ch : n->children) {
            reply += ch;
            reply += '\0';
        }
        return {};
    }

    Result<void> do_directory_part(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 2);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], false);
        HV_TRY(path);
        auto off = parse_uint(a->v[1], UINT32_MAX);
        HV_TRY(off);
        View v(store, cur_tx);
        const Node* n = v.get(*path);
        if (n == nullptr) {
            return fail(missing_error(c, v, *path));
        }
        if (!(access(&c, n->perms) & PERM_READ)) {
            return fail_errno(EACCES);
        }
        // SPEC: C xenstored — the children as one NUL-separated string, sent from byte `off`
        // as far as whole names fit; an extra NUL marks the end of the list.
        reply = std::to_string(n->gen);
        reply += '\0';
        std::size_t pos = 0;
        bool all = true;
        for (const auto& ch : n->children) {
            const std::size_t len = ch.size() + 1;
            if (pos + len <= *off) {
                pos += len;
                continue;
            }
            const std::size_t skip = pos < *off ? *off - pos : 0;  // offset inside this name
            if (reply.size() + (len - skip) + 1 > XENSTORE_PAYLOAD_MAX) {
                all = false;
                break;
            }
            reply.append(ch, skip);
            reply += '\0';
            pos += len;
        }
        if (all) {
            reply += '\0';
        }
        return {};
    }

    Result<void> do_get_perms(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], true);
        HV_TRY(path);
        const Perms* perms = nullptr;
        View v(store, cur_tx);
        if ((*path)[0] == '@') {
            auto it = special.find(*path);
            if (it == special.end()) {
                return fail_errno(ENOENT);
            }
            perms = &it->second;
        } else {
            const Node* n = v.get(*path);
            if (n == nullptr) {
                return fail(missing_error(c, v, *path));
            }
            perms = &n->perms;
        }
        if (!(access(&c, *perms) & PERM_READ)) {
            return fail_errno(EACCES);
        }
        reply.clear();
        for (const Perm& p : *perms) {
            append_perm(reply, p);
            reply += '\0';
        }
        return {};
    }

    Result<void> do_write(Conn& c, const Request& r) {
        const auto nul = r.payload.find('\0');
        if (nul == std::string_view::npos) {
            return fail_errno(EINVAL);
        }
        auto path = canonical(c, r.payload.substr(0, nul), false);
        HV_TRY(path);
        const std::string_view value = r.payload.substr(nul + 1);
        View v(store, cur_tx);
        const Node* existing = v.get(*path);
        if (existing != nullptr && !(access(&c, existing->perms) & PERM_WRITE)) {
            return fail_errno(EACCES);
        }
        if (!c.privileged) {
            const Quotas& q = quotas_for(c.domid);
            const std::size_t base = existing ? node_size(*existing) - existing->value.size() : 4;
            if (base + value.size() > q.node_size) {
                return fail_errno(ENOSPC);
            }
            const std::int64_t grow =
                static_cast<std::int64_t>(value.size()) -
                static_cast<std::int64_t>(existing ? existing->value.size() : 0);
            if (grow > 0 && v.usage(c.domid).bytes + grow > q.memory) {
                return fail_errno(ENOSPC);
            }
        }
        auto node = mkdir_path(&c, v, *path);
        HV_TRY(node);
        Node* n = *node;
        v.add_usage(n->perms[0].id, 0,
                    static_cast<std::int64_t>(value.size()) -
                        static_cast<std::int64_t>(n->value.size()));
        n->value.assign(value);
        queue_event(c, r, make_event(v, *path, n->perms));
        ok();
        return {};
    }

    Result<void> do_mkdir(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], false);
        HV_TRY(path);
        View v(store, cur_tx);
        if (const Node* n = v.get(*path)) {
            if (!(access(&c, n->perms) & PERM_WRITE)) {
                return fail_errno(EACCES);
            }
            ok();
            return {};
        }
        auto node = mkdir_path(&c, v, *path);
        HV_TRY(node);
        queue_event(c, r, make_event(v, *path, (*node)->perms));
        ok();
        return {};
    }

    Result<void> do_rm(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], false);
        HV_TRY(path);
        if (*path == "/") {
            return fail_errno(EINVAL);
        }
        View v(store, cur_tx);
        const Node* n = v.get(*path);
        if (n == nullptr) {
            const Node* parent = v.get(parent_of(*path));
            if (parent == nullptr) {
                return fail(missing_error(c, v, *path));
            }
            if (!(access(&c, parent->perms) & PERM_READ)) {
                return fail_errno(EACCES);
            }
            ok();  // SPEC: C xenstored — removing a missing child of an existing node succeeds
            return {};
        }
        if (!(access(&c, n->perms) & PERM_WRITE)) {
            return fail_errno(EACCES);
        }
        remove_tree(c, r, v, *path);
        ok();
        return {};
    }

    Result<void> do_set_perms(Conn& c, const Request& r) {
        // The list can be longer than split_args holds: parse by hand.
        if (r.payload.empty() || r.payload.back() != '\0') {
            return fail_errno(EINVAL);
        }
        std::string_view rest = r.payload;
        const auto first_nul = rest.find('\0');
        auto path = canonical(c, rest.substr(0, first_nul), true);
        HV_TRY(path);
        rest.remove_prefix(first_nul + 1);
        Perms perms;
        while (!rest.empty()) {
            const auto nul = rest.find('\0');
            auto p = parse_perm(rest.substr(0, nul));
            HV_TRY(p);
            perms.push_back(*p);
            rest.remove_prefix(nul + 1);
        }
        if (perms.empty()) {
            return fail_errno(EINVAL);
        }
        if (!c.privileged && perms.size() > quotas_for(c.domid).permissions) {
            return fail_errno(ENOSPC);
        }
        if ((*path)[0] == '@') {
            auto it = special.find(*path);
            if (it == special.end()) {
                return fail_errno(ENOENT);
            }
            if (!(access(&c, it->second) & PERM_OWNER)) {
                return fail_errno(EACCES);
            }
            it->second = std::move(perms);
            ok();
            return {};
        }
        View v(store, cur_tx);
        const Node* n = v.get(*path);
        if (n == nullptr) {
            return fail(missing_error(c, v, *path));
        }
        const std::uint8_t acc = access(&c, n->perms);
        if ((acc & (PERM_WRITE | PERM_OWNER)) != (PERM_WRITE | PERM_OWNER)) {
            return fail_errno(EACCES);
        }
        if (!c.privileged && perms[0].id != n->perms[0].id) {
            return fail_errno(EPERM);
        }
        Node* m = v.modify(*path);
        if (m->perms[0].id != perms[0].id) {
            const auto bytes = static_cast<std::int64_t>(node_memory(*path, *m));
            v.add_usage(m->perms[0].id, -1, -bytes);
            v.add_usage(perms[0].id, 1, bytes);
        }
        m->perms = std::move(perms);
        queue_event(c, r, make_event(v, *path, m->perms));
        ok();
        return {};
    }

    Result<void> do_watch(Conn& c, const Request& r) {
        auto a = split_args(r.payload, 3);
        HV_TRY(a);
        if (a->n < 2) {
            return fail_errno(EINVAL);
        }
        Watch w;
        auto path = canonical(c, a->v[0], true);
        HV_TRY(path);
        w.abs = std::move(*path);
        w.given = a->v[0];
        w.relative = a->v[0][0] != '/' && a->v[0][0] != '@';
        w.token = a->v[1];
        if (a->n == 3) {
            auto d = parse_uint(a->v[2], UINT32_MAX);
            HV_TRY(d);
            w.depth = static_cast<unsigned>(*d);
        }
        std::string key = w.abs;
        key += '\0';
        key += w.token;
        if (c.watch_keys.count(key) != 0) {
            return fail_errno(EEXIST);
        }
        if (!c.privileged && domain_count(c.domid, true) >= quotas_for(c.domid).watches) {
            return fail_errno(ENOSPC);
        }
        c.watch_keys.insert(std::move(key));
        w.seq = next_watch_seq++;
        index_watch(c, c.watches.emplace(w.seq, w).first->second);
        initial_watch = std::move(w);
        ok();
        return {};
    }

    Result<void> do_unwatch(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 2);
        HV_TRY(a);
        auto path = canonical(c, a->v[0], true);
        HV_TRY(path);
        std::string key = *path;
        key += '\0';
        key += a->v[1];
        if (c.watch_keys.erase(key) == 0) {
            return fail_errno(ENOENT);
        }
        for (auto it = c.watches.begin(); it != c.watches.end(); ++it) {
            if (it->second.abs == *path && it->second.token == a->v[1]) {
                unindex_watch(c, it->second);
                c.watches.erase(it);
                ok();
                return {};
            }
        }
        return fail_errno(ENOENT);
    }

    Result<void> do_transaction_start(Conn& c, const Request& r) {
        if (r.tx_id != 0) {  // nesting is unsupported; an unknown id is just unknown
            return fail_errno(c.txs.count(r.tx_id) != 0 ? EBUSY : ENOENT);
        }
        if (!c.privileged && domain_count(c.domid, false) >= quotas_for(c.domid).transactions) {
            return fail_errno(ENOSPC);
        }
        std::uint32_t id = c.next_tx;
        while (id == 0 || c.txs.count(id) != 0) {
            ++id;
        }
        c.next_tx = id + 1;
        auto tx = std::make_unique<Transaction>();
        tx->id = id;
        c.txs.emplace(id, std::move(tx));
        reply = std::to_string(id);
        reply += '\0';
        return {};
    }

    Result<void> do_transaction_end(Conn& c, const Request& r) {
        auto a = exact_args(r.payload, 1);  // checked first, as C xenstored does
        HV_TRY(a);
        if (a->v[0] != "T" && a->v[0] != "F") {
            return fail_errno(EINVAL);
        }
        auto it = c.txs.find(r.tx_id);
        if (r.tx_id == 0 || it == c.txs.end()) {
            return fail_errno(ENOENT);
        }
        std::unique_ptr<Transaction> tx = std::move(it->second);
        c.txs.erase(it);
        std::vector<Event> events = std::move(c.tx_events[r.tx_id]);
        c.tx_events.erase(r.tx_id);
        if (a->v[0] == "T") {
            HV_TRY(commit(store, *tx));
            for (auto& e : events) {
                pending.push_back(std::move(e));
            }
        }
        ok();
        return {};
    }

    Result<void> do_introduce(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 3);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        HV_TRY(parse_int(a->v[1]));                 // gfn: signed decimal, unused here
        HV_TRY(parse_uint(a->v[2], UINT32_MAX));    // event channel, unused here
        HV_TRY(introduce(*domid));
        ok();
        return {};
    }

    Result<void> do_release(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        if (*domid == 0) {
            return fail_errno(EINVAL);
        }
        HV_TRY(release(*domid));
        ok();
        return {};
    }

    Result<void> do_get_domain_path(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        reply = domain_path(*domid);
        reply += '\0';
        return {};
    }

    Result<void> do_is_domain_introduced(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        reply.assign(introduced(*domid) ? "T" : "F", 2);
        return {};
    }

    Result<void> do_resume(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 1);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        if (!introduced(*domid)) {
            return fail_errno(ENOENT);
        }
        ok();
        return {};
    }

    Result<void> do_set_target(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 2);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        auto target = parse_domid(a->v[1]);
        HV_TRY(target);
        if (!introduced(*domid) || !introduced(*target)) {
            return fail_errno(ENOENT);
        }
        domains[*domid].target = *target;
        ok();
        return {};
    }

    Result<void> do_reset_watches(Conn& c, const Request&) {
        drop_watches(c);
        c.txs.clear();
        c.tx_events.clear();
        ok();
        return {};
    }

    Result<void> do_get_feature(Conn&, const Request& r) {
        auto a = split_args(r.payload, 1);
        HV_TRY(a);
        std::uint32_t f = kSupportedFeatures;
        if (a->n == 1) {
            auto domid = parse_domid(a->v[0]);
            HV_TRY(domid);
            auto it = domains.find(*domid);
            if (it == domains.end()) {
                return fail_errno(ENOENT);
            }
            f = it->second.features;
        }
        reply = std::to_string(f);
        reply += '\0';
        return {};
    }

    Result<void> do_set_feature(Conn&, const Request& r) {
        auto a = exact_args(r.payload, 2);
        HV_TRY(a);
        auto domid = parse_domid(a->v[0]);
        HV_TRY(domid);
        auto f = parse_uint(a->v[1], UINT32_MAX);
        HV_TRY(f);
        if ((*f & ~static_cast<std::uint64_t>(kSupportedFeatures)) != 0) {
            return fail_errno(EINVAL);
        }
        Domain& d = domains[*domid];
        if (d.introduced) {
            return fail_errno(EBUSY);
        }
        d.features = static_cast<std::uint32_t>(*f);
        ok();
        return {};
    }

    Result<void> do_get_quota(Conn&, const Request& r) {
        auto a = split_args(r.payload, 2);
        HV_TRY(a);
        reply.clear();
        if (a->n == 0) {
            for (auto name : Quotas::names()) {
                reply += name;
                reply += '\0';
            }
            return {};
        }
        const Quotas* q = &cfg.quotas;
        std::string_view name = a->v[0];
        if (a->n == 2) {
            auto domid = parse_domid(a->v[0]);
            HV_TRY(domid);
            q = &quotas_for(*domid);
            name = a->v[1];
        }
        const std::uint32_t* f = q->field(name);
        if (f == nullptr) {
            return fail_errno(EINVAL);
        }
        reply = std::to_string(*f);
        reply += '\0';
        return {};
    }

    Result<void> do_set_quota(Conn&, const Request& r) {
        auto a = split_args(r.payload, 3);
        HV_TRY(a);
        if (a->n < 2) {
            return fail_errno(EINVAL);
        }
        Quotas* q = &cfg.quotas;
        unsigned i = 0;
        if (a->n == 3) {
            auto domid = parse_domid(a->v[0]);
            HV_TRY(domid);
            Domain& d = domains[*domid];
            if (!d.quotas) {
                d.quotas = cfg.quotas;
            }
            q = &*d.quotas;
            i = 1;
        }
        std::uint32_t* f = q->field(a->v[i]);
        if (f == nullptr) {
            return fail_errno(EINVAL);
        }
        auto v = parse_uint(a->v[i + 1], UINT32_MAX);
        HV_TRY(v);
        *f = static_cast<std::uint32_t>(*v);
        ok();
        return {};
    }

    Result<void> do_control(Conn&, const Request& r) {
        auto a = split_args(r.payload, 4);
        HV_TRY(a);
        if (a->n == 0) {
            return fail_errno(EINVAL);
        }
        const std::string_view cmd = a->v[0];
        if (cmd == "check") {
            HV_TRY(check());
            ok();
            return {};
        }
        if (cmd == "help") {
            reply = "check\nhelp\nquota\n";
            reply += '\0';
            return {};
        }
        if (cmd == "quota") {
            reply.clear();
            for (auto name : Quotas::names()) {
                reply += name;
                reply += ' ';
                reply += std::to_string(*cfg.quotas.field(name));
                reply += '\n';
            }
            reply += '\0';
            return {};
        }
        return fail_errno(EINVAL);
    }

    // ---- domains -----------------------------------------------------------------------------

    bool introduced(std::uint16_t domid) const {
        auto it = domains.find(domid);
        return it != domains.end() && it->second.introduced;
    }

    Result<void> introduce(std::uint16_t domid) {
        Domain& d = domains[domid];
        if (d.introduced) {
            return {};
        }
        d.introduced = true;
        fire_special(kIntroduce, domid);
        return {};
    }

    Result<void> release(std::uint16_t domid) {
        for (auto& [id, c] : conns) {
            if (c->domid == domid) {
                drop_watches(*c);
                c->txs.clear();
                c->tx_events.clear();
                doom(*c);
            }
        }
        auto it = domains.find(domid);
        if (it == domains.end() || !it->second.introduced) {
            return fail_errno(ENOENT);
        }
        domains.erase(it);
        forget_rights(domid);
        fire_special(kRelease, domid);
        return {};
    }

    /// SPEC: C xenstored since XSA-322: a released domain's rights go with it, so a later
    /// domain given the same id inherits nothing. Every entry naming it is dropped; a node it
    /// owned passes to dom0 (the toolstack removes what it wants gone), keeping its default
    /// access. A changed node gets a new generation, so a transaction that read it conflicts
    /// (EAGAIN) instead of committing the old list back. No watch fires (C xenstored: none).
    void forget_rights(std::uint16_t domid) {
        auto strip = [domid](Perms& p) {
            bool changed = false;
            for (std::size_t i = p.size(); i-- > 1;) {
                if (p[i].id == domid) {
                    p.erase(p.begin() + static_cast<std::ptrdiff_t>(i));
                    changed = true;
                }
            }
            if (p[0].id == domid) {
                p[0].id = 0;
                changed = true;
            }
            return changed;
        };
        View v(store, nullptr);
        for (auto& [path, n] : store.nodes) {
            const bool owned = n.perms[0].id == domid;
            const auto bytes = static_cast<std::int64_t>(node_memory(path, n));
            if (strip(n.perms)) {
                n.gen = store.gen++;
                if (owned) {
                    v.add_usage(domid, -1, -bytes);
                    v.add_usage(0, 1, bytes);
                }
            }
        }
        for (auto& [name, p] : special) {
            (void)strip(p);
        }
    }

    // ---- dispatch ----------------------------------------------------------------------------

    void dispatch(Conn& c, const Request& r) {
        const auto t = static_cast<std::uint32_t>(r.type);
        const Entry* e = t < std::size(table) ? &table[t] : nullptr;
        reply.clear();
        pending.clear();
        initial_watch.reset();
        cur_tx = nullptr;
        Result<void> res;
        if (e == nullptr || e->fn == nullptr) {
            res = fail_errno(ENOSYS);
        } else if ((e->flags & PRIV) && !c.privileged) {
            res = fail_errno(EACCES);
        } else if ((e->flags & TX) && r.tx_id != 0) {
            auto it = c.txs.find(r.tx_id);
            if (it == c.txs.end()) {
                res = fail_errno(ENOENT);
            } else if (!c.privileged &&
                       it->second->seen.size() >= quotas_for(c.domid).transaction_nodes) {
                res = fail_errno(ENOSPC);
            } else {
                cur_tx = it->second.get();
                res = (this->*(e->fn))(c, r);
            }
        } else {
            res = (this->*(e->fn))(c, r);
        }
        cur_tx = nullptr;
        if (!res) {
            const std::error_code ec = res.error();
            const int err = ec.category() == std::system_category() ? ec.value() : EINVAL;
            send_error(c, r, err);
            // A failed request changes nothing visible: drop its events. (Handlers fail before
            // modifying, so there are none; this keeps that true if one ever does not.)
            pending.clear();
            return;
        }
        if (reply.size() > XENSTORE_PAYLOAD_MAX) {
            send_error(c, r, E2BIG);
        } else {
            enqueue(c, r.type, r.req_id, r.tx_id, reply);
        }
        if (initial_watch) {
            send_event(c, *initial_watch, initial_watch->given);
            initial_watch.reset();
        }
        std::vector<Event> evs = std::move(pending);
        pending.clear();
        for (const auto& ev : evs) {
            fire(ev);
        }
    }

    Result<void> feed(Conn& c, std::string_view bytes) {
        if (c.doomed) {
            return {};  // closing: nothing it sends matters any more
        }
        c.in.append(bytes);
        std::size_t off = 0;
        bool stopped = false;
        while (!c.doomed && c.in.size() - off >= sizeof(xsd_sockmsg)) {
            if (!may_read(c)) {
                stopped = true;  // the rest waits until the domain consumes its output
                throttle(c);
                break;
            }
            xsd_sockmsg h;
            // GUEST: the header is copied out of the connection buffer before use.
            std::memcpy(&h, c.in.data() + off, sizeof h);
            if (h.len > XENSTORE_PAYLOAD_MAX) {
                HV_LOG_RL(warn, "xenstore: conn %llu (dom%u) sent a %u-byte payload (max %zu);"
                                " disconnecting", static_cast<unsigned long long>(c.id), c.domid,
                          h.len, XENSTORE_PAYLOAD_MAX);
                c.in.clear();
                c.partial_since.reset();
                return fail_errno(EMSGSIZE);
            }
            if (c.in.size() - off < sizeof h + h.len) {
                break;
            }
            Request r{static_cast<MsgType>(h.type), h.req_id, h.tx_id,
                      std::string_view(c.in).substr(off + sizeof h, h.len)};
            dispatch(c, r);
            off += sizeof h + h.len;
            c.partial_since.reset();
        }
        c.in.erase(0, off);
        if (c.in.empty() || stopped) {
            c.partial_since.reset();  // a throttled connection's wait is not its own stall
        } else if (!c.partial_since) {
            c.partial_since = Clock::now();
        }
        return {};
    }

    /// Each connection's message count matches its queued bytes, and each domain's outstanding
    /// count is the sum over its connections.
    Result<void> check_outstanding() const {
        std::unordered_map<std::uint16_t, std::uint32_t> sum;
        for (const auto& [id, c] : conns) {
            std::uint32_t msgs = 0;
            std::size_t end = c->out_off;
            std::size_t first_end = 0;
            // A partly sent first message: its end is out_next_end; whole ones follow.
            if (c->out_msgs > 0) {
                first_end = c->out_next_end;
                end = first_end;
                msgs = 1;
            }
            while (end < c->out.size()) {
                xsd_sockmsg h;
                std::memcpy(&h, c->out.data() + end, sizeof h);
                end += sizeof h + h.len;
                ++msgs;
            }
            if (msgs != c->out_msgs || end != c->out.size() ||
                (msgs > 0 && (first_end <= c->out_off || first_end > c->out.size()))) {
                HV_ERROR("xenstore check: conn %llu counts %u queued messages, has %u",
                         static_cast<unsigned long long>(id), c->out_msgs, msgs);
                return fail_errno(EIO);
            }
            if (!c->privileged) {
                sum[c->domid] += msgs;
            }
        }
        for (const auto& [domid, o] : outstanding) {
            if (o.queued != sum[domid]) {
                HV_ERROR("xenstore check: dom%u outstanding %u, queued %u", domid, o.queued,
                         sum[domid]);
                return fail_errno(EIO);
            }
            sum.erase(domid);
        }
        for (const auto& [domid, n] : sum) {
            if (n != 0) {
                HV_ERROR("xenstore check: dom%u has %u queued messages, not counted", domid, n);
                return fail_errno(EIO);
            }
        }
        return {};
    }

    Result<void> check() const {
        std::map<std::uint16_t, Usage> usage;
        for (const auto& [path, n] : store.nodes) {
            if (n.perms.empty()) {
                HV_ERROR("xenstore check: %s has no permissions", path.c_str());
                return fail_errno(EIO);
            }
            usage[n.perms[0].id].nodes += 1;
            usage[n.perms[0].id].bytes += static_cast<std::int64_t>(node_memory(path, n));
            for (const auto& ch : n.children) {
                if (store.nodes.count(child_path(path, ch)) == 0) {
                    HV_ERROR("xenstore check: %s lists missing child %s", path.c_str(),
                             ch.c_str());
                    return fail_errno(EIO);
                }
            }
            if (path == "/") {
                continue;
            }
            auto pit = store.nodes.find(parent_of(path));
            if (pit == store.nodes.end()) {
                HV_ERROR("xenstore check: %s has no parent", path.c_str());
                return fail_errno(EIO);
            }
            const auto& sib = pit->second.children;
            if (std::count(sib.begin(), sib.end(), std::string(basename_of(path))) != 1) {
                HV_ERROR("xenstore check: %s not listed once by its parent", path.c_str());
                return fail_errno(EIO);
            }
        }
        if (auto r = check_outstanding(); !r) {
            return r;
        }
        std::size_t indexed = 0;
        std::size_t watches = 0;
        for (const auto& [path, refs] : watch_index) {
            indexed += refs.size();
            for (const WatchRef& r : refs) {
                auto w = r.conn->watches.find(r.seq);
                if (w == r.conn->watches.end() || w->second.abs != path) {
                    HV_ERROR("xenstore check: watch index entry %s is stale", path.c_str());
                    return fail_errno(EIO);
                }
            }
        }
        for (const auto& [id, c] : conns) {
            for (const auto& [seq, w] : c->watches) {
                watches += w.abs[0] != '@' ? 1 : 0;
            }
        }
        if (indexed != watches) {
            HV_ERROR("xenstore check: %zu watches, %zu indexed", watches, indexed);
            return fail_errno(EIO);
        }
        for (const auto& [domid, u] : store.usage) {
            usage[domid];
        }
        for (const auto& [domid, want] : usage) {
            Usage u;
            if (auto it = store.usage.find(domid); it != store.usage.end()) {
                u = it->second;
            }
            if (u.nodes != want.nodes || u.bytes != want.bytes) {
                HV_ERROR("xenstore check: dom%u usage %lld/%lld, counted %lld/%lld", domid,
                         static_cast<long long>(u.nodes), static_cast<long long>(u.bytes),
                         static_cast<long long>(want.nodes), static_cast<long long>(want.bytes));
                return fail_errno(EIO);
            }
        }
        return {};
    }
};

// SPEC: xenstored core.c wire_funcs[] — one row per message type: handler and flags.
const Core::Impl::Entry Core::Impl::table[] = {
    /* 0  CONTROL           */ {"CONTROL", &Impl::do_control, PRIV},
    /* 1  DIRECTORY         */ {"DIRECTORY", &Impl::do_directory, TX},
    /* 2  READ              */ {"READ", &Impl::do_read, TX},
    /* 3  GET_PERMS         */ {"GET_PERMS", &Impl::do_get_perms, TX},
    /* 4  WATCH             */ {"WATCH", &Impl::do_watch, NONE},
    /* 5  UNWATCH           */ {"UNWATCH", &Impl::do_unwatch, NONE},
    /* 6  TRANSACTION_START */ {"TRANSACTION_START", &Impl::do_transaction_start, NONE},
    /* 7  TRANSACTION_END   */ {"TRANSACTION_END", &Impl::do_transaction_end, NONE},
    /* 8  INTRODUCE         */ {"INTRODUCE", &Impl::do_introduce, PRIV},
    /* 9  RELEASE           */ {"RELEASE", &Impl::do_release, PRIV},
    /* 10 GET_DOMAIN_PATH   */ {"GET_DOMAIN_PATH", &Impl::do_get_domain_path, NONE},
    /* 11 WRITE             */ {"WRITE", &Impl::do_write, TX},
    /* 12 MKDIR             */ {"MKDIR", &Impl::do_mkdir, TX},
    /* 13 RM                */ {"RM", &Impl::do_rm, TX},
    /* 14 SET_PERMS         */ {"SET_PERMS", &Impl::do_set_perms, TX},
    /* 15 WATCH_EVENT       */ {"WATCH_EVENT", nullptr, NONE},
    /* 16 ERROR             */ {"ERROR", nullptr, NONE},
    /* 17 IS_DOMAIN_INTRO.  */ {"IS_DOMAIN_INTRODUCED", &Impl::do_is_domain_introduced, PRIV},
    /* 18 RESUME            */ {"RESUME", &Impl::do_resume, PRIV},
    /* 19 SET_TARGET        */ {"SET_TARGET", &Impl::do_set_target, PRIV},
    /* 20 RESTRICT          */ {"RESTRICT", nullptr, NONE},
    /* 21 RESET_WATCHES     */ {"RESET_WATCHES", &Impl::do_reset_watches, NONE},
    /* 22 DIRECTORY_PART    */ {"DIRECTORY_PART", &Impl::do_directory_part, TX},
    /* 23 GET_FEATURE       */ {"GET_FEATURE", &Impl::do_get_feature, NONE},
    /* 24 SET_FEATURE       */ {"SET_FEATURE", &Impl::do_set_feature, PRIV},
    /* 25 GET_QUOTA         */ {"GET_QUOTA", &Impl::do_get_quota, PRIV},
    /* 26 SET_QUOTA         */ {"SET_QUOTA", &Impl::do_set_quota, PRIV},
};
static_assert(std::size(Core::Impl::table) == static_cast<std::size_t>(MsgType::XS_TYPE_COUNT));

// ---------------------------------------------------------------------------------------------

Core::Core(ServerConfig cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}
Core::~Core() = default;

ConnId Core::connect(DomId domid) {
    auto c = std::make_unique<Conn>();
    c->id = impl_->next_id++;
    c->domid = domid.get();
    c->privileged = domid.get() == 0;
    c->home = domain_path(domid.get());
    const ConnId id = c->id;
    impl_->conns.emplace(id, std::move(c));
    return id;
}

void Core::disconnect(ConnId id) noexcept { impl_->forget(id); }

Result<void> Core::feed(ConnId id, std::string_view bytes) {
    auto it = impl_->conns.find(id);
    if (it == impl_->conns.end()) {
        return {};
    }
    return impl_->feed(*it->second, bytes);
}

std::string_view Core::output(ConnId id) const noexcept {
    auto it = impl_->conns.find(id);
    if (it == impl_->conns.end()) {
        return {};
    }
    return std::string_view(it->second->out).substr(it->second->out_off);
}

void Core::consume_output(ConnId id, std::size_t n) noexcept {
    auto it = impl_->conns.find(id);
    if (it == impl_->conns.end()) {
        return;
    }
    impl_->consume(*it->second, n);
}

bool Core::admit(ConnId id) {
    auto it = impl_->conns.find(id);
    if (it == impl_->conns.end()) {
        return false;
    }
    if (impl_->may_read(*it->second)) {
        return true;
    }
    impl_->throttle(*it->second);
    return false;
}

std::vector<ConnId> Core::take_resumed() { return std::exchange(impl_->resumed, {}); }
std::uint64_t Core::throttle_events() const noexcept { return impl_->throttle_events; }

std::optional<Core::Clock::time_point> Core::partial_since(ConnId id) const noexcept {
    auto it = impl_->conns.find(id);
    if (it == impl_->conns.end()) {
        return std::nullopt;
    }
    return it->second->partial_since;
}

std::vector<ConnId> Core::take_doomed() { return std::exchange(impl_->doomed, {}); }
std::vector<ConnId> Core::take_dirty() { return std::exchange(impl_->dirty, {}); }
void Core::take_dirty(std::vector<ConnId>& into) {
    into.clear();
    into.swap(impl_->dirty);  // the two vectors trade capacity: no allocation per request
}

Result<void> Core::introduce_domain(DomId domid) {
    if (domid.get() >= DOMID_FIRST_RESERVED) {
        return fail_errno(EINVAL);
    }
    return impl_->introduce(domid.get());
}

Result<void> Core::release_domain(DomId domid) {
    if (domid.get() >= DOMID_FIRST_RESERVED || domid.get() == 0) {
        return fail_errno(EINVAL);
    }
    return impl_->release(domid.get());
}

bool Core::is_introduced(DomId domid) const noexcept { return impl_->introduced(domid.get()); }
std::size_t Core::connection_count() const noexcept { return impl_->conns.size(); }
std::uint64_t Core::slow_reader_disconnects() const noexcept { return impl_->misbehaving; }
Result<void> Core::check() const { return impl_->check(); }

// ---------------------------------------------------------------------------------------------

const std::vector<std::string_view>& Quotas::names() {
    static const std::vector<std::string_view> n = {
        "nodes",       "watches",   "transactions", "outstanding", "transaction-nodes",
        "permissions", "path-max",  "node-size",    "memory"};
    return n;
}

const std::uint32_t* Quotas::field(std::string_view name) const noexcept {
    return const_cast<Quotas*>(this)->field(name);
}

std::uint32_t* Quotas::field(std::string_view name) noexcept {
    if (name == "nodes") return &nodes;
    if (name == "watches") return &watches;
    if (name == "transactions") return &transactions;
    if (name == "outstanding") return &outstanding;
    if (name == "transaction-nodes") return &transaction_nodes;
    if (name == "permissions") return &permissions;
    if (name == "path-max") return &path_max;
    if (name == "node-size") return &node_size;
    if (name == "memory") return &memory;
    return nullptr;
}

Result<void> Quotas::apply(std::string_view assignment) noexcept {
    const auto eq = assignment.find('=');
    if (eq == std::string_view::npos) {
        return fail_errno(EINVAL);
    }
    std::uint32_t* f = field(assignment.substr(0, eq));
    if (f == nullptr) {
        return fail_errno(EINVAL);
    }
    auto v = parse_uint(assignment.substr(eq + 1), UINT32_MAX);
    HV_TRY(v);
    *f = static_cast<std::uint32_t>(*v);
    return {};
}

}  // namespace hv::xs
