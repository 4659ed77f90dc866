// NBD server (newstyle fixed handshake, simple replies) as a sans-I/O Session plus a small
// socket Server around it. Used by hv-guest to give each disk to ordinary software (nbdcopy,
// fio's nbd engine, qemu-img). The client is untrusted: every byte it sends is parsed here.
// Layer: frontends. Threads: a Session and a Server are driven by one thread.
// SPEC: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md (fields copied by name).
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

namespace hv::nbd {

// SPEC: proto.md constants.
inline constexpr std::uint64_t NBDMAGIC = 0x4e42444d41474943ULL;
inline constexpr std::uint64_t IHAVEOPT = 0x49484156454F5054ULL;
inline constexpr std::uint64_t NBD_REP_MAGIC = 0x3e889045565a9ULL;
inline constexpr std::uint32_t NBD_REQUEST_MAGIC = 0x25609513U;
inline constexpr std::uint32_t NBD_SIMPLE_REPLY_MAGIC = 0x67446698U;

inline constexpr std::uint16_t NBD_FLAG_FIXED_NEWSTYLE = 1U << 0;
inline constexpr std::uint16_t NBD_FLAG_NO_ZEROES = 1U << 1;
inline constexpr std::uint32_t NBD_FLAG_C_FIXED_NEWSTYLE = 1U << 0;
inline constexpr std::uint32_t NBD_FLAG_C_NO_ZEROES = 1U << 1;

inline constexpr std::uint32_t NBD_OPT_EXPORT_NAME = 1;
inline constexpr std::uint32_t NBD_OPT_ABORT = 2;
inline constexpr std::uint32_t NBD_OPT_LIST = 3;
inline constexpr std::uint32_t NBD_OPT_STARTTLS = 5;
inline constexpr std::uint32_t NBD_OPT_INFO = 6;
inline constexpr std::uint32_t NBD_OPT_GO = 7;
inline constexpr std::uint32_t NBD_OPT_STRUCTURED_REPLY = 8;

inline constexpr std::uint32_t NBD_REP_ACK = 1;
inline constexpr std::uint32_t NBD_REP_SERVER = 2;
inline constexpr std::uint32_t NBD_REP_INFO = 3;
inline constexpr std::uint32_t NBD_REP_FLAG_ERROR = 1U << 31;
inline constexpr std::uint32_t NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR | 1;
inline constexpr std::uint32_t NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR | 2;
inline constexpr std::uint32_t NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR | 3;
inline constexpr std::uint32_t NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR | 6;

inline constexpr std::uint16_t NBD_INFO_EXPORT = 0;
inline constexpr std::uint16_t NBD_INFO_NAME = 1;
inline constexpr std::uint16_t NBD_INFO_DESCRIPTION = 2;
inline constexpr std::uint16_t NBD_INFO_BLOCK_SIZE = 3;

inline constexpr std::uint16_t NBD_FLAG_HAS_FLAGS = 1U << 0;
inline constexpr std::uint16_t NBD_FLAG_READ_ONLY = 1U << 1;
inline constexpr std::uint16_t NBD_FLAG_SEND_FLUSH = 1U << 2;
inline constexpr std::uint16_t NBD_FLAG_SEND_FUA = 1U << 3;
inline constexpr std::uint16_t NBD_FLAG_SEND_TRIM = 1U << 5;
inline constexpr std::uint16_t NBD_FLAG_CAN_MULTI_CONN = 1U << 8;

inline constexpr std::uint16_t NBD_CMD_READ = 0;
inline constexpr std::uint16_t NBD_CMD_WRITE = 1;
inline constexpr std::uint16_t NBD_CMD_DISC = 2;
inline constexpr std::uint16_t NBD_CMD_FLUSH = 3;
inline constexpr std::uint16_t NBD_CMD_TRIM = 4;
inline constexpr std::uint16_t NBD_CMD_FLAG_FUA = 1U << 0;

inline constexpr std::uint32_t NBD_EPERM = 1;
inline constexpr std::uint32_t NBD_EIO = 5;
inline constexpr std::uint32_t NBD_ENOMEM = 12;
inline constexpr std::uint32_t NBD_EINVAL = 22;
inline constexpr std::uint32_t NBD_ENOSPC = 28;
inline constexpr std::uint32_t NBD_EOVERFLOW = 75;
inline constexpr std::uint32_t NBD_ENOTSUP = 95;
inline constexpr std::uint32_t NBD_ESHUTDOWN = 108;

/// Largest READ/WRITE payload we accept (advertised as the maximum block size).
inline constexpr std::uint32_t kMaxPayload = 32U << 20;
/// Largest option payload; a longer one closes the connection.
inline constexpr std::uint32_t kMaxOptionLength = 64U << 10;
/// Commands in flight per connection before we stop reading from it.
inline constexpr std::size_t kMaxInflight = 64;

/// What an export looks like to clients.
struct ExportInfo {
    std::string name;
    std::string description;
    std::uint64_t size = 0;
    std::uint32_t min_block = 512;  ///< offsets and lengths must be multiples of this
    bool read_only = false;
    bool flush = false;
    bool trim = false;
};

enum class CmdType : std::uint8_t { read, write, flush, trim };

/// One validated command for an Export. `data`: read → fill `length` bytes; write → the bytes.
struct Command {
    CmdType type = CmdType::read;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::byte* data = nullptr;
    bool fua = false;
};

/// The storage behind an export. start() must call `done(nbd_error)` exactly once (possibly
/// before it returns); `data` stays valid until then. nbd_error is 0 or an NBD_E* value.
class Export {
public:
    virtual ~Export() = default;
    virtual ExportInfo info() const = 0;
    virtual void start(const Command& cmd, std::function<void(std::uint32_t nbd_error)> done) = 0;
};

/// One client connection, without sockets: feed() bytes in, take output() out.
/// Hostile input: any malformed handshake or request closes the session (closed() = true)
/// or gets an error reply, never anything worse. Completions may arrive after close.
class Session : public std::enable_shared_from_this<Session> {
public:
    /// `exports` looked up by name; the empty name selects the first one.
    static std::shared_ptr<Session> create(std::vector<std::shared_ptr<Export>> exports);

    /// Parses as much buffered input as possible and starts commands.
    void feed(std::span<const std::byte> in);
    /// Bytes to send to the client, in order.
    std::span<const std::byte> output() const noexcept { return {out_.data() + out_off_, out_.size() - out_off_}; }
    void consume_output(std::size_t n) noexcept;
    /// True once the protocol says to end the connection (abort, disconnect, bad input).
    /// Pending output should still be flushed (best effort).
    bool closed() const noexcept { return closed_; }
    /// True while the session can take more input (in-flight and output bounded).
    bool wants_input() const noexcept;
    /// True once transmission has started on an export.
    bool transmitting() const noexcept { return phase_ == Phase::transmission; }
    std::size_t inflight() const noexcept { return inflight_; }
    /// Why the session closed (for logs and tests); empty if it did not.
    const std::string& close_reason() const noexcept { return close_reason_; }

private:
    explicit Session(std::vector<std::shared_ptr<Export>> exports);
    enum class Phase : std::uint8_t { client_flags, options, transmission };
    void close(std::string why);
    bool step();  // one unit of parsing; false = need more input (or closed)
    bool handle_option(std::uint32_t opt, std::span<const std::byte> data);
    void reply_option(std::uint32_t opt, std::uint32_t type, std::span<const std::byte> data = {});
    bool handle_request();
    void simple_reply(std::uint64_t cookie, std::uint32_t err, std::span<const std::byte> data = {});
    std::shared_ptr<Export> find(const std::string& name) const;
    bool send_info(std::uint32_t opt, const Export& e, std::span<const std::uint16_t> wanted);

    std::vector<std::shared_ptr<Export>> exports_;
    std::shared_ptr<Export> current_;
    ExportInfo current_info_;
    Phase phase_ = Phase::client_flags;
    bool no_zeroes_ = false;
    bool closed_ = false;
    bool disc_ = false;
    std::string close_reason_;
    std::vector<std::byte> in_;
    std::size_t in_off_ = 0;
    std::vector<std::byte> out_;
    std::size_t out_off_ = 0;
    std::size_t inflight_ = 0;
};

/// Serves exports on Unix sockets (one listening socket per export path). poll_fds() and
/// handle() let a caller drive it from its own poll loop.
class Server {
public:
    Server() = default;
    /// Binds `path` (an existing socket file is replaced) and serves `exp` on it as the only
    /// export there. Errors: socket/bind/listen errno.
    Result<void> listen(const std::string& path, std::shared_ptr<Export> exp);
    /// Serves an already-connected socket (tests: one end of a socketpair).
    void add_connection(UniqueFd fd, std::vector<std::shared_ptr<Export>> exports);
    /// Stops serving `path`: closes its listener and its connections, unlinks the file.
    void remove(const std::string& path);
    /// fds to poll with the events wanted (POLLIN / POLLOUT).
    void poll_fds(std::vector<::pollfd>& out) const;
    /// Handles readiness of the fds returned by poll_fds (any subset; unknown fds ignored).
    void handle(const ::pollfd& p);
    /// Flushes output produced by completions (call after I/O completions ran).
    void flush_all();
    std::size_t connections() const noexcept { return conns_.size(); }
    /// Polls and handles for up to timeout_ms (tests and simple programs).
    void run_once(int timeout_ms);

private:
    struct Listener {
        std::string path;
        UniqueFd fd;
        std::shared_ptr<Export> exp;
    };
    struct Conn {
        UniqueFd fd;
        std::string path;  // listener it came from ("" for add_connection)
        std::shared_ptr<Session> s;
        bool eof = false;
    };
    void service(Conn& c, short revents);
    void flush(Conn& c);
    std::vector<Listener> listeners_;
    std::vector<std::unique_ptr<Conn>> conns_;
};

}  // namespace hv::nbd
