// hv::xs::Client against the real server: calls, errors, watch queue fd, the transaction helper,
// concurrent callers, domain-bound fds and connection loss.
#include <poll.h>

#include <atomic>

#include "harness.hpp"
#include "xenstore/client.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

namespace {
std::unique_ptr<Client> connect(Harness& h) {
    auto c = Client::connect(h.socket_path());
    REQUIRE(c.has_value());
    return std::move(*c);
}
const std::error_code kENOENT(ENOENT, std::system_category());
const std::error_code kEACCES(EACCES, std::system_category());
}  // namespace

TEST_CASE("the client reads, writes, lists, removes and handles permissions", "[xenstore][client]") {
    Harness h;
    auto c = connect(h);
    REQUIRE(c->write("/cl/a", "1").has_value());
    REQUIRE(c->mkdir("/cl/b").has_value());
    CHECK(c->read("/cl/a").value() == "1");
    CHECK(c->directory("/cl").value() == std::vector<std::string>{"a", "b"});
    CHECK(c->read("/cl/none").error() == kENOENT);
    REQUIRE(c->set_perms("/cl/a", {{hv::DomId{0}, Access::none}, {hv::DomId{3}, Access::read}})
                .has_value());
    auto p = c->get_perms("/cl/a");
    REQUIRE(p.has_value());
    CHECK(*p == std::vector<Permission>{{hv::DomId{0}, Access::none}, {hv::DomId{3}, Access::read}});
    REQUIRE(c->rm("/cl").has_value());
    CHECK(c->directory("/cl").error() == kENOENT);
    CHECK(c->get_domain_path(hv::DomId{7}).value() == "/local/domain/7");
    CHECK(c->write("/x", std::string(5000, 'v')).error() ==
          std::error_code(EMSGSIZE, std::system_category()));
}

TEST_CASE("watch events arrive through a pollable fd", "[xenstore][client]") {
    Harness h;
    auto c = connect(h);
    REQUIRE(c->watch("/ev", "tok").has_value());
    pollfd p{c->watch_fd(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
    auto e = c->next_event();
    REQUIRE(e);
    CHECK(e->path == "/ev");
    CHECK(e->token == "tok");
    CHECK_FALSE(c->next_event());
    CHECK(::poll(&p, 1, 0) == 0);  // drained: no longer readable
    REQUIRE(c->write("/ev/x", "1").has_value());
    auto e2 = c->wait_event(std::chrono::milliseconds(5000));
    REQUIRE(e2.has_value());
    CHECK(e2->path == "/ev/x");
    REQUIRE(c->unwatch("/ev", "tok").has_value());
    CHECK(c->unwatch("/ev", "tok").error() == kENOENT);
    CHECK(c->wait_event(std::chrono::milliseconds(50)).error() ==
          std::error_code(ETIMEDOUT, std::system_category()));
}

TEST_CASE("the transaction helper retries the whole function on EAGAIN", "[xenstore][client]") {
    Harness h;
    auto c = connect(h);
    auto other = connect(h);
    REQUIRE(c->write("/counter", "0").has_value());
    int runs = 0;
    auto r = c->transaction([&](TxId tx) -> hv::Result<int> {
        ++runs;
        auto v = c->read("/counter", tx);
        if (!v) {
            return hv::fail(v.error());
        }
        const int n = std::stoi(*v);
        if (runs == 1) {  // someone else changes it under our first attempt
            REQUIRE(other->write("/counter", "10").has_value());
        }
        HV_TRY(c->write("/counter", std::to_string(n + 1), tx));
        return n + 1;
    });
    REQUIRE(r.has_value());
    CHECK(*r == 11);
    CHECK(runs == 2);
    CHECK(c->read("/counter").value() == "11");
    // An error from the function aborts and is returned as is.
    auto bad = c->transaction([&](TxId tx) -> hv::Result<void> {
        HV_TRY(c->write("/never", "1", tx));
        return hv::fail_errno(EIO);
    });
    CHECK(bad.error() == std::error_code(EIO, std::system_category()));
    CHECK(c->read("/never").error() == kENOENT);
}

TEST_CASE("many threads share one client and each gets its own replies", "[xenstore][client]") {
    Harness h;
    auto c = connect(h);
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
        ts.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                const std::string path = "/mt/" + std::to_string(t) + "/" + std::to_string(i);
                const std::string val = std::to_string(t * 1000 + i);
                if (!c->write(path, val) || c->read(path).value_or("") != val) {
                    ++failures;
                }
            }
        });
    }
    for (auto& th : ts) {
        th.join();
    }
    CHECK(failures == 0);
    CHECK(c->directory("/mt/3").value().size() == 200);
}

TEST_CASE("a client on a domain-bound fd acts as that domain", "[xenstore][client]") {
    Harness h;
    h.make_domain_home(4);
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(h.server().add_connection(hv::UniqueFd(sv[0]), hv::DomId{4}).has_value());
    auto c = Client::from_fd(hv::UniqueFd(sv[1]));
    REQUIRE(c.has_value());
    REQUIRE((*c)->write("device/x", "1").has_value());
    auto p = (*c)->get_perms("device/x");
    REQUIRE(p.has_value());
    CHECK((*p)[0].domid == hv::DomId{4});
    CHECK((*c)->read("/tool").error() == kEACCES);
}

TEST_CASE("requests fail with ECONNRESET once the server is gone", "[xenstore][client]") {
    auto h = std::make_unique<Harness>();
    auto c = connect(*h);
    REQUIRE(c->write("/a", "1").has_value());
    REQUIRE(c->watch("/a", "t").has_value());
    REQUIRE(c->wait_event(std::chrono::milliseconds(5000)).has_value());  // initial event
    h.reset();
    CHECK(c->read("/a").error() == std::error_code(ECONNRESET, std::system_category()));
    CHECK_FALSE(c->connected());
    CHECK(c->wait_event(std::chrono::milliseconds(100)).error() ==
          std::error_code(ECONNRESET, std::system_category()));
}

TEST_CASE("permission strings parse and print", "[xenstore][client]") {
    CHECK(parse_permission("b12").value() == Permission{hv::DomId{12}, Access::both});
    CHECK(to_string(Permission{hv::DomId{3}, Access::write}) == "w3");
    CHECK_FALSE(parse_permission("q1").has_value());
    CHECK_FALSE(parse_permission("r").has_value());
    CHECK_FALSE(parse_permission("r1x").has_value());
    CHECK_FALSE(parse_permission("r65536").has_value());
}

TEST_CASE("a scoped watch unwatches when it goes out of scope", "[xenstore][client]") {
    Harness h;
    auto c = connect(h);
    {
        auto w = c->watch_scoped("/sc", "t");
        REQUIRE(w.has_value());
        REQUIRE(c->wait_event(std::chrono::milliseconds(5000)).has_value());
        ScopedWatch moved = std::move(*w);
        CHECK(moved.path() == "/sc");
    }
    CHECK(c->unwatch("/sc", "t").error() == kENOENT);  // already gone
    REQUIRE(c->write("/sc", "1").has_value());
    CHECK(c->wait_event(std::chrono::milliseconds(50)).error() ==
          std::error_code(ETIMEDOUT, std::system_category()));
}
