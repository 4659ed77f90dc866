#include "nbd_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace hv::test {

std::vector<std::byte> be_bytes(std::uint64_t v, std::size_t n) {
    std::vector<std::byte> out;
    for (std::size_t i = n; i-- > 0;) {
        out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
    }
    return out;
}

std::uint64_t from_be(std::span<const std::byte> b) {
    std::uint64_t v = 0;
    for (auto x : b) {
        v = (v << 8) | std::to_integer<std::uint64_t>(x);
    }
    return v;
}

std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
    std::vector<std::byte> out(n);
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (auto& b : out) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b = static_cast<std::byte>(x & 0xFF);
    }
    return out;
}

std::optional<NbdClient> NbdClient::connect_unix(const std::string& path, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            return NbdClient(std::move(fd), timeout_ms);
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return std::nullopt;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling for a file to appear
    }
}

bool NbdClient::send_raw(std::span<const std::byte> b) {
    std::size_t off = 0;
    while (off < b.size()) {
        const ssize_t n = ::send(fd_.get(), b.data() + off, b.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

bool NbdClient::recv_exact(std::span<std::byte> b) {
    std::size_t off = 0;
    while (off < b.size()) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, timeout_ms_) <= 0) {
            return false;
        }
        const ssize_t n = ::recv(fd_.get(), b.data() + off, b.size() - off, 0);
        if (n <= 0) {
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

bool NbdClient::closed_by_peer() {
    std::byte b[256];
    for (;;) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, timeout_ms_) <= 0) {
            return false;
        }
        const ssize_t n = ::recv(fd_.get(), b, sizeof b, 0);
        if (n == 0) {
            return true;
        }
        if (n < 0) {
            return errno == ECONNRESET;
        }
    }
}

bool NbdClient::greet(std::uint32_t client_flags) {
    std::byte g[18];
    if (!recv_exact(g)) {
        return false;
    }
    if (from_be(std::span(g, 8)) != 0x4e42444d41474943ULL ||
        from_be(std::span(g + 8, 8)) != 0x49484156454F5054ULL) {
        return false;
    }
    return send_raw(be_bytes(client_flags, 4));
}

std::vector<NbdClient::OptReply> NbdClient::option(std::uint32_t opt, std::span<const std::byte> data) {
    std::vector<std::byte> m = be_bytes(0x49484156454F5054ULL, 8);
    auto o = be_bytes(opt, 4);
    auto l = be_bytes(data.size(), 4);
    m.insert(m.end(), o.begin(), o.end());
    m.insert(m.end(), l.begin(), l.end());
    m.insert(m.end(), data.begin(), data.end());
    std::vector<OptReply> out;
    if (!send_raw(m)) {
        return out;
    }
    for (;;) {
        std::byte h[20];
        if (!recv_exact(h)) {
            return out;
        }
        if (from_be(std::span(h, 8)) != 0x3e889045565a9ULL || from_be(std::span(h + 8, 4)) != opt) {
            return out;
        }
        OptReply r;
        r.type = static_cast<std::uint32_t>(from_be(std::span(h + 12, 4)));
        const auto len = from_be(std::span(h + 16, 4));
        if (len > (1U << 20)) {
            return out;
        }
        r.data.resize(len);
        if (!recv_exact(r.data)) {
            return out;
        }
        out.push_back(r);
        if (r.type == 1 || (r.type & 0x80000000U) != 0) {  // ACK or error ends the reply
            return out;
        }
    }
}

bool NbdClient::go(const std::string& name) {
    std::vector<std::byte> d = be_bytes(name.size(), 4);
    for (char c : name) {
        d.push_back(static_cast<std::byte>(c));
    }
    auto n = be_bytes(1, 2);
    d.insert(d.end(), n.begin(), n.end());
    auto bs = be_bytes(3, 2);  // NBD_INFO_BLOCK_SIZE
    d.insert(d.end(), bs.begin(), bs.end());
    auto replies = option(7, d);
    if (replies.empty() || replies.back().type != 1) {
        return false;
    }
    for (const auto& r : replies) {
        if (r.type == 3 && r.data.size() >= 2) {
            const auto t = from_be(std::span(r.data.data(), 2));
            if (t == 0 && r.data.size() == 12) {
                size = from_be(std::span(r.data.data() + 2, 8));
                flags = static_cast<std::uint16_t>(from_be(std::span(r.data.data() + 10, 2)));
            } else if (t == 3 && r.data.size() == 14) {
                min_block = static_cast<std::uint32_t>(from_be(std::span(r.data.data() + 2, 4)));
                pref_block = static_cast<std::uint32_t>(from_be(std::span(r.data.data() + 6, 4)));
                max_block = static_cast<std::uint32_t>(from_be(std::span(r.data.data() + 10, 4)));
            }
        }
    }
    return true;
}

bool NbdClient::send_request(std::uint16_t type, std::uint64_t cookie, std::uint64_t offset,
                             std::uint32_t length, std::span<const std::byte> write_data,
                             std::uint16_t cmd_flags) {
    std::vector<std::byte> m = be_bytes(0x25609513U, 4);
    for (auto& part : {be_bytes(cmd_flags, 2), be_bytes(type, 2), be_bytes(cookie, 8),
                       be_bytes(offset, 8), be_bytes(length, 4)}) {
        m.insert(m.end(), part.begin(), part.end());
    }
    m.insert(m.end(), write_data.begin(), write_data.end());
    return send_raw(m);
}

std::optional<NbdClient::Reply> NbdClient::recv_reply(std::uint32_t read_len) {
    std::byte h[16];
    if (!recv_exact(h) || from_be(std::span(h, 4)) != 0x67446698U) {
        return std::nullopt;
    }
    Reply r;
    r.error = static_cast<std::uint32_t>(from_be(std::span(h + 4, 4)));
    r.cookie = from_be(std::span(h + 8, 8));
    if (r.error == 0 && read_len > 0) {
        r.data.resize(read_len);
        if (!recv_exact(r.data)) {
            return std::nullopt;
        }
    }
    return r;
}

int NbdClient::command(std::uint16_t type, std::uint64_t offset, std::uint32_t length,
                       std::span<const std::byte> write_data, std::vector<std::byte>* read_out,
                       std::uint16_t cmd_flags) {
    const std::uint64_t cookie = next_cookie_++;
    if (!send_request(type, cookie, offset, length, write_data, cmd_flags)) {
        return -1;
    }
    auto r = recv_reply(type == 0 ? length : 0);
    if (!r || r->cookie != cookie) {
        return -1;
    }
    if (read_out != nullptr) {
        *read_out = std::move(r->data);
    }
    return static_cast<int>(r->error);
}

void NbdClient::disconnect() { (void)send_request(2, 0, 0, 0); }

}  // namespace hv::test
