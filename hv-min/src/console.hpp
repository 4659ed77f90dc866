// ConsoleBackend: hv-min as every domain's console backend (xenconsoled's role): drains each
// console ring into $HV_RUNDIR/console/<domid>.log (rotated at a limit) and serves
// $HV_RUNDIR/console/<domid>.sock (stream: output out, typed input into the `in` ring).
// Layer: hv-min (L1). Runs on Core's epoll thread only: fd() sits in Core's epoll set.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "hv/expected.hpp"
#include "hv/mapping.hpp"
#include "hv/unique_fd.hpp"

namespace hv::hvmin {

class ConsoleBackend {
public:
    struct Options {
        std::filesystem::path dir;                 ///< <rundir>/console
        std::size_t log_limit_bytes = 1u << 20;    ///< <id>.log is renamed to <id>.log.1 beyond this
        std::size_t client_queue_limit = 1u << 18;  ///< a client with more unread output is dropped
        std::size_t replay_bytes = 16384;          ///< recent output sent to a client that connects
    };

    /// Creates the directory and the epoll set. Errors: mkdir/epoll errno.
    static Result<std::unique_ptr<ConsoleBackend>> create(Options o);
    ~ConsoleBackend();

    /// Readable when process() has work.
    int fd() const noexcept { return ep_.get(); }
    /// Handles everything ready; never blocks.
    void process() noexcept;

    /// A dom0 XenStore connection (our end of a socketpair the server serves as dom0): the
    /// console keys are written on it; replies are read and dropped (errors logged).
    Result<void> set_xenstore(UniqueFd fd);

    /// Starts serving a domain's console: `page_fd` is the one-page extent of its ring (mapped
    /// here), `wait` becomes readable when the guest notifies, `notify` is the guest's port.
    /// Creates the log and the socket and writes the console keys. Errors: open/socket/mmap.
    Result<void> add(std::uint16_t domid, int page_fd, std::uint64_t frame, std::uint32_t port,
                     UniqueFd wait, UniqueFd notify);
    /// The domain is gone: drains what is left, closes the clients and the socket (its file
    /// is removed); the log stays. Idempotent.
    void remove(std::uint16_t domid) noexcept;
    /// True while the console is serviced (not removed, not disconnected as hostile).
    bool connected(std::uint16_t domid) const noexcept;

private:
    struct Console;
    struct Client;
    explicit ConsoleBackend(Options o) noexcept;
    void on_ring(Console& c) noexcept;
    void on_listen(Console& c) noexcept;
    void on_client(Console& c, std::uint64_t cid, std::uint32_t events) noexcept;
    void on_xenstore() noexcept;
    void emit(Console& c, const char* data, std::size_t n) noexcept;
    void feed_input(Console& c) noexcept;
    void flush_client(Console& c, Client& cl) noexcept;
    void drop_client(Console& c, std::uint64_t cid, const char* why) noexcept;
    void disconnect(Console& c, const char* why) noexcept;
    void close_endpoints(Console& c) noexcept;
    void xs_send(std::uint32_t type, const std::string& payload) noexcept;
    void write_log(Console& c, const char* data, std::size_t n) noexcept;

    Options opt_;
    UniqueFd ep_;
    UniqueFd xs_;
    std::uint64_t next_client_ = 1;
    std::map<std::uint16_t, std::unique_ptr<Console>> consoles_;
};

}  // namespace hv::hvmin
