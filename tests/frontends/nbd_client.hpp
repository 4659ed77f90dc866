// A small blocking NBD client for tests (newstyle fixed, NBD_OPT_GO, simple replies), with raw
// access for hostile-input tests. Every wait is bounded (poll with a timeout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hv/unique_fd.hpp"

namespace hv::test {

class NbdClient {
public:
    explicit NbdClient(UniqueFd fd, int timeout_ms = 10000) : fd_(std::move(fd)), timeout_ms_(timeout_ms) {}
    /// Connects to a Unix socket (retrying until it exists, within the timeout).
    static std::optional<NbdClient> connect_unix(const std::string& path, int timeout_ms = 10000);

    /// Reads the greeting and sends client flags. False on any mismatch.
    bool greet(std::uint32_t client_flags = 3);
    /// NBD_OPT_GO for `name`: true on success (size/flags filled).
    bool go(const std::string& name = "");
    std::uint64_t size = 0;
    std::uint16_t flags = 0;
    std::uint32_t min_block = 0, pref_block = 0, max_block = 0;

    /// Sends an option; returns the reply types received until ACK or an error type.
    struct OptReply {
        std::uint32_t type = 0;
        std::vector<std::byte> data;
    };
    std::vector<OptReply> option(std::uint32_t opt, std::span<const std::byte> data);

    /// One command: sends and waits for its reply. Returns the NBD error (0 = ok), or -1 when
    /// the connection died or the reply did not match.
    int command(std::uint16_t type, std::uint64_t offset, std::uint32_t length,
                std::span<const std::byte> write_data = {}, std::vector<std::byte>* read_out = nullptr,
                std::uint16_t cmd_flags = 0);
    int read(std::uint64_t off, std::uint32_t len, std::vector<std::byte>& out) {
        return command(0, off, len, {}, &out);
    }
    int write(std::uint64_t off, std::span<const std::byte> data) {
        return command(1, off, static_cast<std::uint32_t>(data.size()), data);
    }
    int flush() { return command(3, 0, 0); }
    int trim(std::uint64_t off, std::uint32_t len) { return command(4, off, len); }
    void disconnect();

    /// Pipelined: send a request without waiting.
    bool send_request(std::uint16_t type, std::uint64_t cookie, std::uint64_t offset,
                      std::uint32_t length, std::span<const std::byte> write_data = {},
                      std::uint16_t cmd_flags = 0);
    /// Receives one simple reply header (and `read_len` data bytes when error == 0).
    struct Reply {
        std::uint32_t error = 0;
        std::uint64_t cookie = 0;
        std::vector<std::byte> data;
    };
    std::optional<Reply> recv_reply(std::uint32_t read_len);

    bool send_raw(std::span<const std::byte> b);
    bool recv_exact(std::span<std::byte> b);
    /// True if the peer closed the connection (reads EOF) within the timeout.
    bool closed_by_peer();
    int fd() const { return fd_.get(); }

private:
    UniqueFd fd_;
    int timeout_ms_;
    std::uint64_t next_cookie_ = 1;
};

std::vector<std::byte> be_bytes(std::uint64_t v, std::size_t n);
std::uint64_t from_be(std::span<const std::byte> b);
/// Deterministic pattern bytes from a seed.
std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed);

}  // namespace hv::test
