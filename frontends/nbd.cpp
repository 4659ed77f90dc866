// NBD server: the handshake and transmission parser (untrusted client bytes) and the socket
// glue. Layer: frontends. One thread drives a Server and its Sessions.
#include "frontends/nbd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "hv/log.hpp"

namespace hv::nbd {

namespace {

std::uint64_t get_be(std::span<const std::byte> b, std::size_t off, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) {
        v = (v << 8) | std::to_integer<std::uint64_t>(b[off + i]);
    }
    return v;
}

void put_be(std::vector<std::byte>& out, std::uint64_t v, std::size_t n) {
    for (std::size_t i = n; i-- > 0;) {
        out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
    }
}

void put_bytes(std::vector<std::byte>& out, std::span<const std::byte> b) {
    out.insert(out.end(), b.begin(), b.end());
}

std::span<const std::byte> as_bytes(const std::string& s) {
    return std::as_bytes(std::span(s.data(), s.size()));
}

constexpr std::size_t kOptHeader = 16;   // IHAVEOPT, option, length
constexpr std::size_t kReqHeader = 28;   // magic, flags, type, cookie, offset, length
constexpr std::size_t kMaxOutput = 64U << 20;

std::uint16_t transmission_flags(const ExportInfo& i) {
    std::uint16_t f = NBD_FLAG_HAS_FLAGS;
    if (i.read_only) {
        f |= NBD_FLAG_READ_ONLY;
    }
    if (i.flush) {
        f |= NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
    }
    if (i.trim && !i.read_only) {
        f |= NBD_FLAG_SEND_TRIM;
    }
    return f;
}

}  // namespace

Session::Session(std::vector<std::shared_ptr<Export>> exports) : exports_(std::move(exports)) {
    put_be(out_, NBDMAGIC, 8);
    put_be(out_, IHAVEOPT, 8);
    put_be(out_, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 2);
}

std::shared_ptr<Session> Session::create(std::vector<std::shared_ptr<Export>> exports) {
    return std::shared_ptr<Session>(new Session(std::move(exports)));
}

void Session::consume_output(std::size_t n) noexcept {
    out_off_ += std::min(n, out_.size() - out_off_);
    if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
    }
}

bool Session::wants_input() const noexcept {
    return !closed_ && !disc_ && inflight_ < kMaxInflight && out_.size() - out_off_ < kMaxOutput;
}

void Session::close(std::string why) {
    if (!closed_) {
        closed_ = true;
        close_reason_ = std::move(why);
    }
}

void Session::feed(std::span<const std::byte> in) {
    if (closed_) {
        return;
    }
    in_.insert(in_.end(), in.begin(), in.end());
    while (!closed_ && wants_input() && step()) {
    }
    if (in_off_ > 0 && (in_off_ == in_.size() || in_off_ > (1U << 20))) {
        in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(in_off_));
        in_off_ = 0;
    }
}

std::shared_ptr<Export> Session::find(const std::string& name) const {
    if (exports_.empty()) {
        return nullptr;
    }
    if (name.empty()) {
        return exports_.front();
    }
    for (const auto& e : exports_) {
        if (e->info().name == name) {
            return e;
        }
    }
    return nullptr;
}

void Session::reply_option(std::uint32_t opt, std::uint32_t type, std::span<const std::byte> data) {
    put_be(out_, NBD_REP_MAGIC, 8);
    put_be(out_, opt, 4);
    put_be(out_, type, 4);
    put_be(out_, data.size(), 4);
    put_bytes(out_, data);
}

bool Session::send_info(std::uint32_t opt, const Export& e, std::span<const std::uint16_t> wanted) {
    const ExportInfo i = e.info();
    std::vector<std::byte> d;
    put_be(d, NBD_INFO_EXPORT, 2);
    put_be(d, i.size, 8);
    put_be(d, transmission_flags(i), 2);
    reply_option(opt, NBD_REP_INFO, d);
    // Block sizes are always sent: we enforce min_block alignment.
    d.clear();
    put_be(d, NBD_INFO_BLOCK_SIZE, 2);
    put_be(d, i.min_block, 4);
    put_be(d, std::max<std::uint32_t>(i.min_block, 4096), 4);
    put_be(d, kMaxPayload, 4);
    reply_option(opt, NBD_REP_INFO, d);
    for (auto w : wanted) {
        if (w == NBD_INFO_NAME) {
            d.clear();
            put_be(d, NBD_INFO_NAME, 2);
            put_bytes(d, as_bytes(i.name));
            reply_option(opt, NBD_REP_INFO, d);
        } else if (w == NBD_INFO_DESCRIPTION && !i.description.empty()) {
            d.clear();
            put_be(d, NBD_INFO_DESCRIPTION, 2);
            put_bytes(d, as_bytes(i.description));
            reply_option(opt, NBD_REP_INFO, d);
        }
    }
    reply_option(opt, NBD_REP_ACK);
    return true;
}

bool Session::handle_option(std::uint32_t opt, std::span<const std::byte> data) {
    switch (opt) {
        case NBD_OPT_EXPORT_NAME: {
            const std::string name(reinterpret_cast<const char*>(data.data()), data.size());
            auto e = find(name);
            if (!e) {
                close("NBD_OPT_EXPORT_NAME: unknown export");  // SPEC: no error reply exists
                return false;
            }
            current_ = e;
            current_info_ = e->info();
            put_be(out_, current_info_.size, 8);
            put_be(out_, transmission_flags(current_info_), 2);
            if (!no_zeroes_) {
                out_.insert(out_.end(), 124, std::byte{0});
            }
            phase_ = Phase::transmission;
            return true;
        }
        case NBD_OPT_ABORT:
            reply_option(opt, NBD_REP_ACK);
            close("client sent NBD_OPT_ABORT");
            return false;
        case NBD_OPT_LIST: {
            if (!data.empty()) {
                reply_option(opt, NBD_REP_ERR_INVALID);
                return true;
            }
            for (const auto& e : exports_) {
                const std::string n = e->info().name;
                std::vector<std::byte> d;
                put_be(d, n.size(), 4);
                put_bytes(d, as_bytes(n));
                reply_option(opt, NBD_REP_SERVER, d);
            }
            reply_option(opt, NBD_REP_ACK);
            return true;
        }
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            // GUEST-like: every length below comes from the client; check before use.
            if (data.size() < 6) {
                reply_option(opt, NBD_REP_ERR_INVALID);
                return true;
            }
            const auto name_len = static_cast<std::size_t>(get_be(data, 0, 4));
            if (name_len > data.size() - 6) {
                reply_option(opt, NBD_REP_ERR_INVALID);
                return true;
            }
            const std::string name(reinterpret_cast<const char*>(data.data() + 4), name_len);
            const auto n_req = static_cast<std::size_t>(get_be(data, 4 + name_len, 2));
            if (data.size() != 6 + name_len + 2 * n_req) {
                reply_option(opt, NBD_REP_ERR_INVALID);
                return true;
            }
            std::vector<std::uint16_t> wanted;
            for (std::size_t i = 0; i < n_req; ++i) {
                wanted.push_back(static_cast<std::uint16_t>(get_be(data, 6 + name_len + 2 * i, 2)));
            }
            auto e = find(name);
            if (!e) {
                reply_option(opt, NBD_REP_ERR_UNKNOWN);
                return true;
            }
            send_info(opt, *e, wanted);
            if (opt == NBD_OPT_GO) {
                current_ = e;
                current_info_ = e->info();
                phase_ = Phase::transmission;
            }
            return true;
        }
        default:
            // STARTTLS, STRUCTURED_REPLY, meta contexts and unknown options: not supported.
            reply_option(opt, NBD_REP_ERR_UNSUP);
            return true;
    }
}

bool Session::step() {
    const std::span<const std::byte> buf(in_.data() + in_off_, in_.size() - in_off_);
    switch (phase_) {
        case Phase::client_flags: {
            if (buf.size() < 4) {
                return false;
            }
            const auto flags = static_cast<std::uint32_t>(get_be(buf, 0, 4));
            in_off_ += 4;
            if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) != 0) {
                close("unknown client flags");  // SPEC: the server must close
                return false;
            }
            no_zeroes_ = (flags & NBD_FLAG_C_NO_ZEROES) != 0;
            phase_ = Phase::options;
            return true;
        }
        case Phase::options: {
            if (buf.size() < kOptHeader) {
                return false;
            }
            if (get_be(buf, 0, 8) != IHAVEOPT) {
                close("bad option magic");
                return false;
            }
            const auto opt = static_cast<std::uint32_t>(get_be(buf, 8, 4));
            const auto len = static_cast<std::uint32_t>(get_be(buf, 12, 4));
            if (len > kMaxOptionLength) {
                close("option too long");
                return false;
            }
            if (buf.size() < kOptHeader + len) {
                return false;
            }
            in_off_ += kOptHeader + len;
            return handle_option(opt, buf.subspan(kOptHeader, len)) && !closed_;
        }
        case Phase::transmission:
            return handle_request();
    }
    return false;
}

void Session::simple_reply(std::uint64_t cookie, std::uint32_t err, std::span<const std::byte> data) {
    put_be(out_, NBD_SIMPLE_REPLY_MAGIC, 4);
    put_be(out_, err, 4);
    put_be(out_, cookie, 8);
    if (err == 0) {
        put_bytes(out_, data);
    }
}

bool Session::handle_request() {
    const std::span<const std::byte> buf(in_.data() + in_off_, in_.size() - in_off_);
    if (buf.size() < kReqHeader) {
        return false;
    }
    if (get_be(buf, 0, 4) != NBD_REQUEST_MAGIC) {
        close("bad request magic");
        return false;
    }
    const auto flags = static_cast<std::uint16_t>(get_be(buf, 4, 2));
    const auto type = static_cast<std::uint16_t>(get_be(buf, 6, 2));
    const std::uint64_t cookie = get_be(buf, 8, 8);
    const std::uint64_t offset = get_be(buf, 16, 8);
    const auto length = static_cast<std::uint32_t>(get_be(buf, 24, 4));
    const ExportInfo& info = current_info_;

    if (type == NBD_CMD_WRITE) {
        if (length > kMaxPayload) {
            close("write payload too large");  // SPEC: the server may close rather than skip it
            return false;
        }
        if (buf.size() < kReqHeader + length) {
            return false;
        }
    }
    const std::size_t consumed = kReqHeader + (type == NBD_CMD_WRITE ? length : 0U);
    auto payload = buf.subspan(kReqHeader, type == NBD_CMD_WRITE ? length : 0U);

    auto reject = [&](std::uint32_t err) {
        in_off_ += consumed;
        simple_reply(cookie, err);
        return true;
    };

    if (type == NBD_CMD_DISC) {
        in_off_ += kReqHeader;
        disc_ = true;
        if (inflight_ == 0) {
            close("client sent NBD_CMD_DISC");
        }
        return false;
    }
    if ((flags & ~NBD_CMD_FLAG_FUA) != 0) {
        return reject(NBD_EINVAL);
    }
    CmdType ct{};
    switch (type) {
        case NBD_CMD_READ:
            ct = CmdType::read;
            break;
        case NBD_CMD_WRITE:
            ct = CmdType::write;
            break;
        case NBD_CMD_FLUSH:
            ct = CmdType::flush;
            break;
        case NBD_CMD_TRIM:
            ct = CmdType::trim;
            break;
        default:
            return reject(NBD_EINVAL);
    }
    if (ct == CmdType::flush) {
        if (!info.flush) {
            return reject(NBD_EINVAL);
        }
        if (offset != 0 || length != 0) {
            return reject(NBD_EINVAL);
        }
    } else {
        if ((ct == CmdType::write || ct == CmdType::trim) && info.read_only) {
            return reject(NBD_EPERM);
        }
        if (ct == CmdType::trim && !info.trim) {
            return reject(NBD_EINVAL);
        }
        if (ct == CmdType::read && length > kMaxPayload) {
            return reject(NBD_EINVAL);
        }
        if (length == 0 || offset % info.min_block != 0 || length % info.min_block != 0) {
            return reject(NBD_EINVAL);
        }
        if (offset > info.size || length > info.size - offset) {
            return reject(ct == CmdType::write ? NBD_ENOSPC : NBD_EINVAL);
        }
    }
    if ((flags & NBD_CMD_FLAG_FUA) != 0 && !info.flush) {
        return reject(NBD_EINVAL);
    }

    // The command's buffer lives until its completion, even past the session's close.
    auto data = std::make_shared<std::vector<std::byte>>();
    if (ct == CmdType::read) {
        data->resize(length);
    } else if (ct == CmdType::write) {
        data->assign(payload.begin(), payload.end());
    }
    in_off_ += consumed;
    ++inflight_;
    Command cmd{ct, offset, length, data->empty() ? nullptr : data->data(),
                (flags & NBD_CMD_FLAG_FUA) != 0};
    std::weak_ptr<Session> weak = weak_from_this();
    auto done = [weak, data, cookie, ct](std::uint32_t err) {
        auto self = weak.lock();
        if (!self) {
            return;
        }
        --self->inflight_;
        if (!self->closed_) {
            self->simple_reply(cookie, err,
                               ct == CmdType::read ? std::span<const std::byte>(*data)
                                                   : std::span<const std::byte>());
        }
        if (self->disc_ && self->inflight_ == 0) {
            self->close("client sent NBD_CMD_DISC");
        }
    };
    current_->start(cmd, std::move(done));
    return true;
}

// ---- Server ------------------------------------------------------------------------------

Result<void> Server::listen(const std::string& path, std::shared_ptr<Export> exp) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        return fail_errno(ENAMETOOLONG);
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd.get() < 0) {
        return fail_errno();
    }
    ::unlink(path.c_str());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        return fail_errno();
    }
    if (::listen(fd.get(), 16) != 0) {
        return fail_errno();
    }
    listeners_.push_back(Listener{path, std::move(fd), std::move(exp)});
    return {};
}

void Server::add_connection(UniqueFd fd, std::vector<std::shared_ptr<Export>> exports) {
    const int fl = ::fcntl(fd.get(), F_GETFL);
    (void)::fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
    auto c = std::make_unique<Conn>();
    c->fd = std::move(fd);
    c->s = Session::create(std::move(exports));
    conns_.push_back(std::move(c));
    flush(*conns_.back());
}

void Server::remove(const std::string& path) {
    std::erase_if(listeners_, [&](const Listener& l) { return l.path == path; });
    std::erase_if(conns_, [&](const auto& c) { return c->path == path; });
    ::unlink(path.c_str());
}

void Server::poll_fds(std::vector<pollfd>& out) const {
    for (const auto& l : listeners_) {
        out.push_back(pollfd{l.fd.get(), POLLIN, 0});
    }
    for (const auto& c : conns_) {
        short ev = 0;
        if (c->s->wants_input() && !c->eof) {
            ev |= POLLIN;
        }
        if (!c->s->output().empty()) {
            ev |= POLLOUT;
        }
        out.push_back(pollfd{c->fd.get(), ev, 0});
    }
}

void Server::flush(Conn& c) {
    while (!c.s->output().empty()) {
        auto o = c.s->output();
        const ssize_t n = ::send(c.fd.get(), o.data(), o.size(), MSG_NOSIGNAL);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                return;
            }
            c.eof = true;
            c.s->consume_output(o.size());
            return;
        }
        c.s->consume_output(static_cast<std::size_t>(n));
    }
}

void Server::service(Conn& c, short revents) {
    if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !c.eof) {
        std::byte buf[64 * 1024];
        for (int i = 0; i < 16 && c.s->wants_input(); ++i) {
            const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
            if (n > 0) {
                c.s->feed(std::span<const std::byte>(buf, static_cast<std::size_t>(n)));
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                break;
            }
            c.eof = true;
            break;
        }
    }
    flush(c);
}

void Server::handle(const pollfd& p) {
    if (p.revents == 0) {
        return;
    }
    for (auto& l : listeners_) {
        if (l.fd.get() == p.fd) {
            for (;;) {
                UniqueFd fd(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                if (fd.get() < 0) {
                    break;
                }
                auto c = std::make_unique<Conn>();
                c->fd = std::move(fd);
                c->path = l.path;
                c->s = Session::create({l.exp});
                conns_.push_back(std::move(c));
                flush(*conns_.back());
            }
            return;
        }
    }
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
        Conn& c = **it;
        if (c.fd.get() != p.fd) {
            continue;
        }
        service(c, p.revents);
        if ((c.s->closed() && c.s->output().empty()) || c.eof) {
            if (c.s->closed() && !c.s->close_reason().empty()) {
                HV_LOG_RL(debug, "nbd: closing connection: %s", c.s->close_reason().c_str());
            }
            conns_.erase(it);  // completions still running hold the Session, not the fd
        }
        return;
    }
}

void Server::flush_all() {
    for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->s->wants_input()) {
            (*it)->s->feed({});  // input buffered while the session was saturated
        }
        flush(**it);
        if (((*it)->s->closed() && (*it)->s->output().empty()) || (*it)->eof) {
            it = conns_.erase(it);
        } else {
            ++it;
        }
    }
}

void Server::run_once(int timeout_ms) {
    std::vector<pollfd> fds;
    poll_fds(fds);
    if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) {
        return;
    }
    for (const auto& p : fds) {
        handle(p);
    }
    flush_all();
}

}  // namespace hv::nbd
