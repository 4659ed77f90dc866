// hv::xs::Client — XenStore client over a stream socket speaking the xsd_sockmsg protocol.
// Layer: L1 (xenstore); used by backends, frontends and hvctl. Thread-safe: any number of
// threads may issue requests at once (replies are matched by req_id); one internal reader
// thread receives replies and watch events, and a caller waiting within its spin window
// (ClientOptions::spin) reads the socket itself. Watch events queue up behind watch_fd().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "hv/expected.hpp"
#include "hv/spin.hpp"
#include "hv/strong.hpp"
#include "hv/unique_fd.hpp"
#include "xenstore/wire.hpp"

namespace hv::xs {

/// A transaction id; the default (0) means "no transaction".
using TxId = Strong<struct TxIdTag, std::uint32_t>;

enum class Access : std::uint8_t { none = 0, read = 1, write = 2, both = 3 };

/// One permission entry: the first of a list names the owner and everyone's default access.
struct Permission {
    DomId domid{};
    Access access = Access::none;
    friend bool operator==(const Permission&, const Permission&) = default;
};
/// "r5" etc. Errors: EINVAL.
Result<Permission> parse_permission(std::string_view s);
std::string to_string(Permission p);

struct WatchEvent {
    std::string path;   ///< the modified path (relative if the watch was relative)
    std::string token;
};

struct ClientOptions {
    /// How long a request waits for its reply before failing with ETIMEDOUT.
    std::chrono::milliseconds timeout{30000};
    /// Spin window (hv::SpinPolicy): a request polls the socket itself for up to this long
    /// before it sleeps for its reply; wait_event() does the same while events arrived within
    /// the window, and the reader thread keeps polling this long after it received something.
    /// 0: never spin. Default: the process default (HVKIT_POLL_US).
    std::chrono::microseconds spin = default_spin();
};

class Client;

/// A registered watch that is removed (UNWATCH) when this object dies. Move-only; must not
/// outlive its Client.
class ScopedWatch {
public:
    ScopedWatch() noexcept = default;
    ScopedWatch(Client* c, std::string path, std::string token) noexcept
        : client_(c), path_(std::move(path)), token_(std::move(token)) {}
    ScopedWatch(ScopedWatch&& o) noexcept
        : client_(std::exchange(o.client_, nullptr)), path_(std::move(o.path_)),
          token_(std::move(o.token_)) {}
    ScopedWatch& operator=(ScopedWatch&& o) noexcept {
        if (this != &o) {
            reset();
            client_ = std::exchange(o.client_, nullptr);
            path_ = std::move(o.path_);
            token_ = std::move(o.token_);
        }
        return *this;
    }
    ~ScopedWatch() { reset(); }
    /// Unwatches now (errors ignored: the connection may be gone).
    void reset() noexcept;
    const std::string& path() const noexcept { return path_; }
    const std::string& token() const noexcept { return token_; }

private:
    Client* client_ = nullptr;
    std::string path_;
    std::string token_;
};

class Client {
public:
    /// Connects to a Unix socket path (e.g. the value of XENSTORED_PATH).
    /// Errors: socket/connect errno; ENAMETOOLONG.
    static Result<std::unique_ptr<Client>> connect(const std::string& path, ClientOptions o = {});
    /// Uses an already-connected stream fd (e.g. hv-min's per-domain socket). Takes ownership.
    static Result<std::unique_ptr<Client>> from_fd(UniqueFd fd, ClientOptions o = {});
    /// Stops the reader thread and closes the connection; waiting requests fail with ECONNRESET.
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    /// Errors of every request: the server's error as a system_category errno (ENOENT,
    /// EACCES, EAGAIN…), ETIMEDOUT (no reply in time), ECONNRESET (connection lost),
    /// EMSGSIZE (request payload over 4096 bytes; nothing sent).
    Result<std::string> read(std::string_view path, TxId tx = {});
    Result<void> write(std::string_view path, std::string_view value, TxId tx = {});
    Result<void> mkdir(std::string_view path, TxId tx = {});
    Result<void> rm(std::string_view path, TxId tx = {});
    Result<std::vector<std::string>> directory(std::string_view path, TxId tx = {});
    Result<std::vector<Permission>> get_perms(std::string_view path, TxId tx = {});
    Result<void> set_perms(std::string_view path, const std::vector<Permission>& perms,
                           TxId tx = {});
    /// Registers a watch; its initial event arrives on the event queue like any other.
    Result<void> watch(std::string_view path, std::string_view token,
                       std::optional<unsigned> depth = std::nullopt);
    Result<void> unwatch(std::string_view path, std::string_view token);
    /// watch() whose result unwatches when destroyed.
    Result<ScopedWatch> watch_scoped(std::string_view path, std::string_view token,
                                     std::optional<unsigned> depth = std::nullopt);
    Result<TxId> transaction_start();
    /// commit=false aborts. Errors: EAGAIN (conflict: run the whole transaction again).
    Result<void> transaction_end(TxId tx, bool commit);
    Result<std::string> get_domain_path(DomId domid);

    /// Runs `f(TxId)` (returning a Result) inside a transaction and commits; on EAGAIN at
    /// commit, starts over, at most `max_attempts` times. f's error aborts the transaction.
    template <class F>
    auto transaction(F&& f, unsigned max_attempts = 100) -> std::invoke_result_t<F&, TxId> {
        using R = std::invoke_result_t<F&, TxId>;
        for (unsigned attempt = 1;; ++attempt) {
            auto tx = transaction_start();
            if (!tx) {
                return R(unexpected(tx.error()));
            }
            R r = f(*tx);
            if (!r) {
                (void)transaction_end(*tx, false);
                return r;
            }
            auto end = transaction_end(*tx, true);
            if (end) {
                return r;
            }
            if (end.error() != std::error_code(EAGAIN, std::system_category()) ||
                attempt >= max_attempts) {
                return R(unexpected(end.error()));
            }
        }
    }

    /// Any request: returns the reply payload. XS_ERROR replies become their errno.
    Result<std::string> request(MsgType type, std::string_view payload, TxId tx = {});

    /// Readable (poll/epoll) while watch events are queued. Valid for the Client's life.
    int watch_fd() const noexcept;
    /// The oldest queued watch event, without waiting.
    std::optional<WatchEvent> next_event();
    /// Waits up to `timeout` for a watch event. Errors: ETIMEDOUT, ECONNRESET.
    Result<WatchEvent> wait_event(std::chrono::milliseconds timeout);
    /// False once the connection is lost.
    bool connected() const noexcept;

private:
    struct Impl;
    explicit Client(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hv::xs
