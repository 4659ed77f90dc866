// The NBD server: handshake, options and transmission over a socketpair against a memory disk,
// and hostile clients (every rejection branch of the parser).
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <thread>

#include "frontends/nbd.hpp"
#include "memory_export.hpp"
#include "nbd_client.hpp"

using namespace hv;
using namespace hv::nbd;
using hv::test::be_bytes;
using hv::test::MemoryExport;
using hv::test::NbdClient;
using hv::test::pattern;

namespace {

ExportInfo rw_features() {
    ExportInfo i;
    i.flush = true;
    i.trim = true;
    return i;
}

/// A Server on a background thread serving one end of a socketpair.
struct Served {
    explicit Served(std::vector<std::shared_ptr<Export>> exports) {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        server.add_connection(UniqueFd(sv[0]), std::move(exports));
        client.emplace(UniqueFd(sv[1]), 5000);
        thread = std::thread([this] {
            while (!stop.load()) {
                server.run_once(20);
            }
        });
    }
    ~Served() {
        stop = true;
        thread.join();
    }
    Server server;
    std::optional<NbdClient> client;
    std::atomic<bool> stop{false};
    std::thread thread;
};

std::shared_ptr<MemoryExport> disk(std::uint64_t size = 1 << 20, ExportInfo f = rw_features(),
                                   const char* name = "xvda") {
    return std::make_shared<MemoryExport>(name, size, f);
}

std::vector<std::byte> go_payload(const std::string& name, std::vector<std::uint16_t> infos = {}) {
    auto d = be_bytes(name.size(), 4);
    for (char c : name) {
        d.push_back(static_cast<std::byte>(c));
    }
    auto n = be_bytes(infos.size(), 2);
    d.insert(d.end(), n.begin(), n.end());
    for (auto i : infos) {
        auto b = be_bytes(i, 2);
        d.insert(d.end(), b.begin(), b.end());
    }
    return d;
}

std::vector<std::byte> option_bytes(std::uint64_t magic, std::uint32_t opt, std::uint32_t len,
                                    std::span<const std::byte> data = {}) {
    auto m = be_bytes(magic, 8);
    for (auto& p : {be_bytes(opt, 4), be_bytes(len, 4)}) {
        m.insert(m.end(), p.begin(), p.end());
    }
    m.insert(m.end(), data.begin(), data.end());
    return m;
}

std::vector<std::byte> request_bytes(std::uint32_t magic, std::uint16_t flags, std::uint16_t type,
                                     std::uint64_t cookie, std::uint64_t off, std::uint32_t len) {
    auto m = be_bytes(magic, 4);
    for (auto& p : {be_bytes(flags, 2), be_bytes(type, 2), be_bytes(cookie, 8), be_bytes(off, 8),
                    be_bytes(len, 4)}) {
        m.insert(m.end(), p.begin(), p.end());
    }
    return m;
}

/// A sans-I/O session already in transmission on `e`.
std::shared_ptr<Session> transmitting(std::shared_ptr<Export> e) {
    auto s = Session::create({std::move(e)});
    s->consume_output(s->output().size());
    s->feed(be_bytes(3, 4));
    s->feed(option_bytes(IHAVEOPT, NBD_OPT_GO, 6, go_payload("")));
    REQUIRE(s->transmitting());
    s->consume_output(s->output().size());
    return s;
}

std::uint32_t reply_error(std::span<const std::byte> out, std::uint64_t* cookie = nullptr) {
    REQUIRE(out.size() >= 16);
    CHECK(hv::test::from_be(out.subspan(0, 4)) == NBD_SIMPLE_REPLY_MAGIC);
    if (cookie != nullptr) {
        *cookie = hv::test::from_be(out.subspan(8, 8));
    }
    return static_cast<std::uint32_t>(hv::test::from_be(out.subspan(4, 4)));
}

}  // namespace

TEST_CASE("the server greets with fixed newstyle and GO reports size, flags and block sizes", "[frontends][nbd]") {
    auto d = disk(4 << 20);
    Served s({d});
    REQUIRE(s.client->greet());
    REQUIRE(s.client->go("xvda"));
    CHECK(s.client->size == (4U << 20));
    CHECK((s.client->flags & NBD_FLAG_HAS_FLAGS) != 0);
    CHECK((s.client->flags & NBD_FLAG_SEND_FLUSH) != 0);
    CHECK((s.client->flags & NBD_FLAG_SEND_TRIM) != 0);
    CHECK((s.client->flags & NBD_FLAG_READ_ONLY) == 0);
    CHECK(s.client->min_block == 512);
    CHECK(s.client->max_block == kMaxPayload);
}

TEST_CASE("data written over NBD reads back, flush and trim reach the export", "[frontends][nbd]") {
    auto d = disk();
    Served s({d});
    REQUIRE(s.client->greet());
    REQUIRE(s.client->go(""));
    const auto data = pattern(64 * 1024, 7);
    CHECK(s.client->write(4096, data) == 0);
    std::vector<std::byte> back;
    CHECK(s.client->read(4096, 64 * 1024, back) == 0);
    CHECK(back == data);
    CHECK(s.client->flush() == 0);
    CHECK(d->flushes == 1);
    CHECK(s.client->trim(4096, 4096) == 0);
    CHECK(s.client->read(4096, 4096, back) == 0);
    CHECK(back == std::vector<std::byte>(4096));
    CHECK(s.client->command(NBD_CMD_WRITE, 0, 512, pattern(512, 1), nullptr, NBD_CMD_FLAG_FUA) == 0);
    CHECK(d->last.fua);
    s.client->disconnect();
    CHECK(s.client->closed_by_peer());
}

TEST_CASE("a read-only export advertises READ_ONLY and refuses writes and trims with EPERM", "[frontends][nbd][hostile]") {
    ExportInfo f = rw_features();
    f.read_only = true;
    auto d = disk(1 << 20, f);
    Served s({d});
    REQUIRE(s.client->greet());
    REQUIRE(s.client->go(""));
    CHECK((s.client->flags & NBD_FLAG_READ_ONLY) != 0);
    CHECK((s.client->flags & NBD_FLAG_SEND_TRIM) == 0);
    CHECK(s.client->write(0, pattern(512, 1)) == static_cast<int>(NBD_EPERM));
    CHECK(s.client->trim(0, 512) == static_cast<int>(NBD_EPERM));
    std::vector<std::byte> back;
    CHECK(s.client->read(0, 512, back) == 0);
    CHECK(d->started == 1);
}

TEST_CASE("NBD_OPT_EXPORT_NAME enters transmission with or without the 124 zero bytes", "[frontends][nbd]") {
    for (std::uint32_t cflags : {1U, 3U}) {
        auto d = disk(8192);
        Served s({d});
        REQUIRE(s.client->greet(cflags));
        const std::string name = "xvda";
        REQUIRE(s.client->send_raw(option_bytes(IHAVEOPT, NBD_OPT_EXPORT_NAME, 4,
                                                std::as_bytes(std::span(name.data(), name.size())))));
        std::vector<std::byte> r(10 + (cflags == 1 ? 124 : 0));
        REQUIRE(s.client->recv_exact(r));
        CHECK(hv::test::from_be(std::span(r.data(), 8)) == 8192);
        std::vector<std::byte> back;
        CHECK(s.client->read(0, 512, back) == 0);
    }
}

TEST_CASE("NBD_OPT_LIST names every export, INFO leaves the client in option haggling", "[frontends][nbd]") {
    ExportInfo described = rw_features();
    described.description = "second disk";
    Served s({disk(8192, rw_features(), "xvda"), disk(4096, described, "xvdb")});
    REQUIRE(s.client->greet());
    auto l = s.client->option(NBD_OPT_LIST, {});
    REQUIRE(l.size() == 3);
    CHECK(l[0].type == NBD_REP_SERVER);
    CHECK(l[1].type == NBD_REP_SERVER);
    CHECK(l[2].type == NBD_REP_ACK);
    CHECK(std::string(reinterpret_cast<const char*>(l[1].data.data() + 4), 4) == "xvdb");
    auto info = s.client->option(NBD_OPT_INFO, go_payload("xvdb", {NBD_INFO_NAME, NBD_INFO_DESCRIPTION}));
    REQUIRE(!info.empty());
    CHECK(info.back().type == NBD_REP_ACK);
    CHECK(info.size() == 5);  // export, block size, name, description, ack
    REQUIRE(s.client->go("xvdb"));
    CHECK(s.client->size == 4096);
}

TEST_CASE("unknown exports, options and malformed option payloads get NBD_REP_ERR replies", "[frontends][nbd][hostile]") {
    Served s({disk()});
    REQUIRE(s.client->greet());
    auto r = s.client->option(NBD_OPT_GO, go_payload("nope"));
    REQUIRE(r.size() == 1);
    CHECK(r[0].type == NBD_REP_ERR_UNKNOWN);
    CHECK(s.client->option(NBD_OPT_STARTTLS, {}).at(0).type == NBD_REP_ERR_UNSUP);
    CHECK(s.client->option(NBD_OPT_STRUCTURED_REPLY, {}).at(0).type == NBD_REP_ERR_UNSUP);
    CHECK(s.client->option(99, {}).at(0).type == NBD_REP_ERR_UNSUP);
    CHECK(s.client->option(NBD_OPT_LIST, be_bytes(1, 4)).at(0).type == NBD_REP_ERR_INVALID);
    CHECK(s.client->option(NBD_OPT_GO, be_bytes(0, 3)).at(0).type == NBD_REP_ERR_INVALID);
    auto long_name = be_bytes(1000, 4);  // name length beyond the payload
    long_name.resize(10);
    CHECK(s.client->option(NBD_OPT_GO, long_name).at(0).type == NBD_REP_ERR_INVALID);
    auto bad_count = go_payload("", {1, 2});
    bad_count.pop_back();  // 2 requests announced, 1.5 present
    CHECK(s.client->option(NBD_OPT_INFO, bad_count).at(0).type == NBD_REP_ERR_INVALID);
    REQUIRE(s.client->go(""));  // the session survived all of it
}

TEST_CASE("NBD_OPT_ABORT is acknowledged and closes the connection", "[frontends][nbd]") {
    Served s({disk()});
    REQUIRE(s.client->greet());
    auto r = s.client->option(NBD_OPT_ABORT, {});
    REQUIRE(r.size() == 1);
    CHECK(r[0].type == NBD_REP_ACK);
    CHECK(s.client->closed_by_peer());
}

TEST_CASE("handshake violations close the connection", "[frontends][nbd][hostile]") {
    SECTION("unknown client flags") {
        Served s({disk()});
        REQUIRE(s.client->greet(0x80));
        CHECK(s.client->closed_by_peer());
    }
    SECTION("bad option magic") {
        Served s({disk()});
        REQUIRE(s.client->greet());
        REQUIRE(s.client->send_raw(option_bytes(0x1234, NBD_OPT_LIST, 0)));
        CHECK(s.client->closed_by_peer());
    }
    SECTION("option longer than the limit") {
        Served s({disk()});
        REQUIRE(s.client->greet());
        REQUIRE(s.client->send_raw(option_bytes(IHAVEOPT, NBD_OPT_GO, kMaxOptionLength + 1)));
        CHECK(s.client->closed_by_peer());
    }
    SECTION("EXPORT_NAME of an unknown export") {
        Served s({disk()});
        REQUIRE(s.client->greet());
        REQUIRE(s.client->send_raw(option_bytes(IHAVEOPT, NBD_OPT_EXPORT_NAME, 1, be_bytes('z', 1))));
        CHECK(s.client->closed_by_peer());
    }
}

TEST_CASE("transmission violations close the connection", "[frontends][nbd][hostile]") {
    SECTION("bad request magic") {
        Served s({disk()});
        REQUIRE(s.client->greet());
        REQUIRE(s.client->go(""));
        REQUIRE(s.client->send_raw(request_bytes(0xdeadbeef, 0, NBD_CMD_READ, 1, 0, 512)));
        CHECK(s.client->closed_by_peer());
    }
    SECTION("write payload over the maximum") {
        Served s({disk()});
        REQUIRE(s.client->greet());
        REQUIRE(s.client->go(""));
        REQUIRE(s.client->send_raw(request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 1, 0, kMaxPayload + 512)));
        CHECK(s.client->closed_by_peer());
    }
}

TEST_CASE("bad commands get an error reply and never reach the export", "[frontends][nbd][hostile]") {
    ExportInfo nofeat;  // no flush, no trim
    auto plain = disk(1 << 20, nofeat);
    auto full = disk(1 << 20);
    struct Case {
        const char* what;
        std::shared_ptr<MemoryExport> d;
        std::uint16_t flags, type;
        std::uint64_t off;
        std::uint32_t len;
        std::uint32_t err;
    };
    const Case cases[] = {
        {"misaligned offset", full, 0, NBD_CMD_READ, 100, 512, NBD_EINVAL},
        {"misaligned length", full, 0, NBD_CMD_READ, 0, 100, NBD_EINVAL},
        {"zero length", full, 0, NBD_CMD_READ, 0, 0, NBD_EINVAL},
        {"read past the end", full, 0, NBD_CMD_READ, (1 << 20) - 512, 1024, NBD_EINVAL},
        {"offset overflow", full, 0, NBD_CMD_READ, ~std::uint64_t{511}, 1024, NBD_EINVAL},
        {"read over the maximum", full, 0, NBD_CMD_READ, 0, kMaxPayload + 512, NBD_EINVAL},
        {"write past the end", full, 0, NBD_CMD_WRITE, 1 << 20, 512, NBD_ENOSPC},
        {"unknown command", full, 0, 42, 0, 512, NBD_EINVAL},
        {"unknown command flag", full, 0x40, NBD_CMD_READ, 0, 512, NBD_EINVAL},
        {"flush with a range", full, 0, NBD_CMD_FLUSH, 512, 0, NBD_EINVAL},
        {"flush not offered", plain, 0, NBD_CMD_FLUSH, 0, 0, NBD_EINVAL},
        {"trim not offered", plain, 0, NBD_CMD_TRIM, 0, 512, NBD_EINVAL},
        {"FUA without flush", plain, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0, 512, NBD_EINVAL},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        auto s = transmitting(c.d);
        const unsigned before = c.d->started;
        auto req = request_bytes(NBD_REQUEST_MAGIC, c.flags, c.type, 77, c.off, c.len);
        if (c.type == NBD_CMD_WRITE && c.len <= 4096) {
            auto payload = pattern(c.len, 1);
            req.insert(req.end(), payload.begin(), payload.end());
        }
        s->feed(req);
        std::uint64_t cookie = 0;
        CHECK(reply_error(s->output(), &cookie) == c.err);
        CHECK(cookie == 77);
        CHECK(s->output().size() == 16);
        CHECK_FALSE(s->closed());
        CHECK(c.d->started == before);
    }
}

TEST_CASE("an export error is the reply's error and a failed read carries no data", "[frontends][nbd]") {
    auto d = disk();
    d->fail_with = NBD_EIO;
    auto s = transmitting(d);
    s->feed(request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 5, 0, 4096));
    CHECK(reply_error(s->output()) == NBD_EIO);
    CHECK(s->output().size() == 16);
}

TEST_CASE("replies carry their cookies when completions come out of order", "[frontends][nbd]") {
    auto d = disk();
    d->defer = true;
    auto s = transmitting(d);
    for (std::uint64_t c = 1; c <= 3; ++c) {
        s->feed(request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, c, 0, 512));
    }
    CHECK(s->inflight() == 3);
    CHECK(s->output().empty());
    d->release(true);  // cookie 3 first
    std::uint64_t cookie = 0;
    CHECK(reply_error(s->output(), &cookie) == 0);
    CHECK(cookie == 3);
    CHECK(s->output().size() == 16 + 512);
    s->consume_output(s->output().size());
    d->release();
    d->release();
    CHECK(s->inflight() == 0);
    CHECK(s->output().size() == 2 * (16 + 512));
}

TEST_CASE("NBD_CMD_DISC waits for in-flight commands, which still get their replies", "[frontends][nbd]") {
    auto d = disk();
    d->defer = true;
    auto s = transmitting(d);
    s->feed(request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE, 9, 0, 512));
    s->feed(pattern(512, 3));
    s->feed(request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_DISC, 10, 0, 0));
    CHECK_FALSE(s->closed());
    CHECK_FALSE(s->wants_input());
    d->release();
    CHECK(s->closed());
    std::uint64_t cookie = 0;
    CHECK(reply_error(s->output(), &cookie) == 0);
    CHECK(cookie == 9);
}

TEST_CASE("a completion after the session died is dropped safely", "[frontends][nbd]") {
    auto d = disk();
    d->defer = true;
    {
        auto s = transmitting(d);
        s->feed(request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1, 0, 4096));
    }
    d->release();  // writes into the command's own buffer; the session is gone
    CHECK(d->deferred.empty());
}

TEST_CASE("a client that floods commands is throttled until completions come", "[frontends][nbd]") {
    auto d = disk();
    d->defer = true;
    auto s = transmitting(d);
    std::vector<std::byte> burst;
    for (std::uint64_t c = 0; c < kMaxInflight + 10; ++c) {
        auto r = request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_FLUSH, c, 0, 0);
        burst.insert(burst.end(), r.begin(), r.end());
    }
    s->feed(burst);
    CHECK(s->inflight() == kMaxInflight);
    CHECK_FALSE(s->wants_input());
    d->release();
    s->feed({});  // the server resumes parsing buffered input
    CHECK(s->inflight() == kMaxInflight);
    while (!d->deferred.empty()) {
        d->release();
        s->feed({});
    }
    CHECK(s->inflight() == 0);
    CHECK(d->started == kMaxInflight + 10);
}

TEST_CASE("a handshake split into single bytes parses the same", "[frontends][nbd]") {
    auto d = disk(8192);
    auto s = Session::create({d});
    std::vector<std::byte> in = be_bytes(3, 4);
    auto go = option_bytes(IHAVEOPT, NBD_OPT_GO, 6, go_payload(""));
    in.insert(in.end(), go.begin(), go.end());
    auto rd = request_bytes(NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1, 0, 512);
    in.insert(in.end(), rd.begin(), rd.end());
    for (auto b : in) {
        s->feed(std::span(&b, 1));
    }
    CHECK(s->transmitting());
    CHECK(d->started == 1);
}

TEST_CASE("random bytes never crash the session", "[frontends][nbd][hostile]") {
    const auto seed = static_cast<std::uint32_t>(std::random_device{}());
    INFO("seed " << seed);
    std::printf("nbd random-bytes seed %u\n", seed);
    std::mt19937 rng(seed);
    for (int round = 0; round < 2000; ++round) {
        auto d = disk(1 << 16);
        auto s = Session::create({d});
        std::vector<std::byte> in;
        if (round % 2 == 0) {  // half the rounds get a valid prefix, so transmission is fuzzed too
            in = be_bytes(3, 4);
            auto go = option_bytes(IHAVEOPT, NBD_OPT_GO, 6, go_payload(""));
            in.insert(in.end(), go.begin(), go.end());
        }
        const std::size_t n = rng() % 256;
        for (std::size_t i = 0; i < n; ++i) {
            in.push_back(static_cast<std::byte>(rng() & 0xFF));
        }
        if (round % 4 == 0 && in.size() >= 26 + 28) {  // a valid request magic after GO
            const auto m = be_bytes(NBD_REQUEST_MAGIC, 4);
            std::copy(m.begin(), m.end(), in.begin() + 26);
        }
        s->feed(in);
        CHECK(s->output().size() < (1U << 20));
    }
}
