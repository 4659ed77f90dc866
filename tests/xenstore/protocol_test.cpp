// The XenStore wire protocol over a real socket: every message type, every error it can give.
#include "harness.hpp"

using namespace hv::xs;
using namespace hv::xs::test;

TEST_CASE("write then read returns the exact bytes and echoes req_id and tx_id",
          "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    CHECK(ok(c.write("/a/b", "hello")));
    Msg m = c.read("/a/b");
    CHECK(m.type == MsgType::XS_READ);
    CHECK(m.payload == "hello");  // no NUL added
    CHECK(c.read("/a").payload.empty());  // parents were created with empty values
    REQUIRE(c.send(MsgType::XS_READ, nul_join({"/a/b"}), 0, 777));
    auto r = c.recv();
    REQUIRE(r);
    CHECK(r->req_id == 777);
    CHECK(r->tx_id == 0);
}

TEST_CASE("directory lists children in creation order and empty for a leaf",
          "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/d/z", "1")));
    REQUIRE(ok(c.write("/d/a", "2")));
    REQUIRE(ok(c.mkdir("/d/m")));
    CHECK(c.dir("/d").payload == nul_join({"z", "a", "m"}));
    CHECK(c.dir("/d/z").payload.empty());
    CHECK(c.dir("/").payload == nul_join({"local", "tool", "d"}));
    CHECK(c.dir("/nope").is_error("ENOENT"));
}

TEST_CASE("directory_part pages a listing with a generation and a final empty string",
          "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    // 300 children of 20 characters: 6300 bytes, more than one reply.
    std::vector<std::string> names;
    for (int i = 0; i < 300; ++i) {
        char n[32];
        std::snprintf(n, sizeof n, "child-%014d", i);
        names.emplace_back(n);
        REQUIRE(ok(c.mkdir("/big/" + names.back())));
    }
    CHECK(c.dir("/big").is_error("E2BIG"));
    std::vector<std::string> got;
    std::size_t offset = 0;
    std::string gen;
    for (int round = 0; round < 10; ++round) {
        Msg m = c.call(MsgType::XS_DIRECTORY_PART, nul_join({"/big", std::to_string(offset)}));
        REQUIRE(m.type == MsgType::XS_DIRECTORY_PART);
        CHECK(m.payload.size() <= XENSTORE_PAYLOAD_MAX);
        std::string_view p = m.payload;
        const auto g = p.substr(0, p.find('\0'));
        if (gen.empty()) {
            gen = g;
        }
        CHECK(g == gen);
        p.remove_prefix(g.size() + 1);
        bool end = false;
        while (!p.empty()) {
            const auto nul = p.find('\0');
            if (nul == 0) {
                end = true;
                break;
            }
            got.emplace_back(p.substr(0, nul));
            offset += nul + 1;
            p.remove_prefix(nul + 1);
        }
        if (end) {
            break;
        }
    }
    CHECK(got == names);
    // As C xenstored: an offset inside a name starts there; past the end gives just the end.
    Msg mid = c.call(MsgType::XS_DIRECTORY_PART, nul_join({"/big", "5"}));
    CHECK(mid.payload.substr(gen.size() + 1, 16) == "-00000000000000"s + '\0');
    CHECK(c.call(MsgType::XS_DIRECTORY_PART, nul_join({"/big", "100000"})).payload ==
          gen + '\0' + '\0');
    CHECK(c.call(MsgType::XS_DIRECTORY_PART, nul_join({"/big", "x"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_DIRECTORY_PART, nul_join({"/big"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_DIRECTORY_PART, nul_join({"/none", "0"})).is_error("ENOENT"));
}

TEST_CASE("mkdir of an existing node succeeds and keeps its value", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/m", "v")));
    CHECK(ok(c.mkdir("/m")));
    CHECK(c.read("/m").payload == "v");
}

TEST_CASE("rm removes a subtree, a missing leaf is fine but a missing parent is ENOENT",
          "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/r/a/b/c", "x")));
    CHECK(ok(c.rm("/r/a")));
    CHECK(c.read("/r/a/b/c").is_error("ENOENT"));
    CHECK(c.dir("/r").payload.empty());
    CHECK(ok(c.rm("/r/ghost")));
    CHECK(c.rm("/r/ghost/deeper").is_error("ENOENT"));
    CHECK(c.rm("/").is_error("EINVAL"));
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
}

TEST_CASE("get_perms and set_perms round-trip a permission list", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/p", "")));
    CHECK(c.get_perms("/p").payload == nul_join({"n0"}));
    CHECK(ok(c.set_perms("/p", {"b3", "r4", "w5", "n6"})));
    CHECK(c.get_perms("/p").payload == nul_join({"b3", "r4", "w5", "n6"}));
    REQUIRE(ok(c.write("/p/child", "")));  // inherits
    CHECK(c.get_perms("/p/child").payload == nul_join({"b3", "r4", "w5", "n6"}));
    CHECK(c.set_perms("/p", {"x3"}).is_error("EINVAL"));
    CHECK(c.set_perms("/p", {"r"}).is_error("EINVAL"));
    CHECK(c.set_perms("/p", {"r70000"}).is_error("EINVAL"));
    CHECK(c.set_perms("/p", {}).is_error("EINVAL"));
    CHECK(c.set_perms("/none", {"n0"}).is_error("ENOENT"));
    CHECK(c.get_perms("/none").is_error("ENOENT"));
    CHECK(c.get_perms("@introduceDomain").payload == nul_join({"n0"}));
    CHECK(c.get_perms("@nonsense").is_error("ENOENT"));
}

TEST_CASE("relative paths resolve against the caller's home", "[xenstore][protocol]") {
    Harness h;
    h.make_domain_home(5);
    RawConn d = h.domain(5);
    CHECK(ok(d.write("device/vbd/1/state", "1")));
    RawConn c = h.dom0();
    CHECK(c.read("/local/domain/5/device/vbd/1/state").payload == "1");
    CHECK(d.read("/local/domain/5/device/vbd/1/state").payload == "1");
    CHECK(ok(c.write("x", "dom0")));  // dom0's own home
    CHECK(c.read("/local/domain/0/x").payload == "dom0");
    Msg m = c.call(MsgType::XS_GET_DOMAIN_PATH, nul_join({"5"}));
    CHECK(m.payload == "/local/domain/5"s + '\0');
    CHECK(c.call(MsgType::XS_GET_DOMAIN_PATH, nul_join({"-1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_GET_DOMAIN_PATH, nul_join({"70000"})).is_error("EINVAL"));
}

TEST_CASE("malformed paths are EINVAL", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    for (const char* bad : {"/a//b", "/a/", "/a b", "/a\xff", "/a.b", "/a*"}) {
        INFO(bad);
        CHECK(c.write(bad, "v").is_error("EINVAL"));
        CHECK(c.read(bad).is_error("EINVAL"));
    }
    CHECK(c.read("").is_error("EINVAL"));
    CHECK(c.read("@introduceDomain").is_error("EINVAL"));  // special paths: perms/watches only
    CHECK(c.write(std::string(3073, 'a').insert(0, "/"), "v").is_error("EINVAL"));
}

TEST_CASE("transaction start, commit and abort", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    const std::uint32_t t = c.tx_start();
    CHECK(t != 0);
    CHECK(ok(c.write("/t/a", "1", t)));
    CHECK(c.read("/t/a", t).payload == "1");
    CHECK(c.read("/t/a").is_error("ENOENT"));  // not visible outside before commit
    CHECK(ok(c.tx_end(t, true)));
    CHECK(c.read("/t/a").payload == "1");
    const std::uint32_t t2 = c.tx_start();
    CHECK(ok(c.write("/t/a", "2", t2)));
    CHECK(ok(c.rm("/t", t2)));
    CHECK(ok(c.tx_end(t2, false)));
    CHECK(c.read("/t/a").payload == "1");
    CHECK(c.tx_end(t2, true).is_error("ENOENT"));  // the id is gone
    CHECK(c.read("/t/a", 4242).is_error("ENOENT"));  // unknown transaction
    CHECK(c.tx_end(0, true).is_error("ENOENT"));
    const std::uint32_t t3 = c.tx_start();
    CHECK(c.call(MsgType::XS_TRANSACTION_START, std::string_view("", 1), t3).is_error("EBUSY"));
    CHECK(c.call(MsgType::XS_TRANSACTION_START, std::string_view("", 1), 999).is_error("ENOENT"));
    CHECK(c.call(MsgType::XS_TRANSACTION_END, nul_join({"X"}), t3).is_error("EINVAL"));
    CHECK(ok(c.tx_end(t3, false)));
}

TEST_CASE("domain messages: introduce, is_domain_introduced, resume, set_target, release",
          "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    auto intro = [&](const char* d) { return c.call(MsgType::XS_IS_DOMAIN_INTRODUCED, nul_join({d})); };
    CHECK(intro("0").payload == "T"s + '\0');
    CHECK(intro("7").payload == "F"s + '\0');
    CHECK(ok(c.call(MsgType::XS_INTRODUCE, nul_join({"7", "-1", "3"}))));
    CHECK(intro("7").payload == "T"s + '\0');
    CHECK(h.server().is_introduced(hv::DomId{7}));
    CHECK(c.call(MsgType::XS_INTRODUCE, nul_join({"7", "x", "3"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_INTRODUCE, nul_join({"7", "1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_INTRODUCE, nul_join({"32752", "1", "1"})).is_error("EINVAL"));
    CHECK(ok(c.call(MsgType::XS_RESUME, nul_join({"7"}))));
    CHECK(c.call(MsgType::XS_RESUME, nul_join({"8"})).is_error("ENOENT"));
    CHECK(ok(c.call(MsgType::XS_INTRODUCE, nul_join({"8", "0", "1"}))));
    CHECK(ok(c.call(MsgType::XS_SET_TARGET, nul_join({"8", "7"}))));
    CHECK(c.call(MsgType::XS_SET_TARGET, nul_join({"8", "9"})).is_error("ENOENT"));
    CHECK(c.call(MsgType::XS_SET_TARGET, nul_join({"8"})).is_error("EINVAL"));
    CHECK(ok(c.call(MsgType::XS_RELEASE, nul_join({"7"}))));
    CHECK(intro("7").payload == "F"s + '\0');
    CHECK(c.call(MsgType::XS_RELEASE, nul_join({"7"})).is_error("ENOENT"));
    CHECK(c.call(MsgType::XS_RELEASE, nul_join({"0"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_RELEASE, nul_join({"abc"})).is_error("EINVAL"));
}

TEST_CASE("features: get lists what the server supports, set only before introduce",
          "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    const std::string all = std::to_string(XENSTORE_SERVER_FEATURE_WATCHDEPTH) + '\0';
    CHECK(c.call(MsgType::XS_GET_FEATURE, "").payload == all);
    CHECK(c.call(MsgType::XS_GET_FEATURE, nul_join({"0"})).payload == all);
    CHECK(c.call(MsgType::XS_GET_FEATURE, nul_join({"9"})).is_error("ENOENT"));
    CHECK(ok(c.call(MsgType::XS_SET_FEATURE, nul_join({"9", "0"}))));
    CHECK(c.call(MsgType::XS_GET_FEATURE, nul_join({"9"})).payload == "0"s + '\0');
    CHECK(c.call(MsgType::XS_SET_FEATURE, nul_join({"9", "1"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_FEATURE, nul_join({"0", "4"})).is_error("EBUSY"));
}

TEST_CASE("quota messages read and change global and per-domain limits", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    Msg names = c.call(MsgType::XS_GET_QUOTA, "");
    CHECK(names.payload.find("nodes"s + '\0') != std::string::npos);
    CHECK(names.payload.find("transaction-nodes"s + '\0') != std::string::npos);
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"nodes"})).payload == "1000"s + '\0');
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"watches"})).payload == "128"s + '\0');
    CHECK(ok(c.call(MsgType::XS_SET_QUOTA, nul_join({"watches", "50"}))));
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"watches"})).payload == "50"s + '\0');
    CHECK(ok(c.call(MsgType::XS_SET_QUOTA, nul_join({"3", "nodes", "7"}))));
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"3", "nodes"})).payload == "7"s + '\0');
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"4", "nodes"})).payload == "1000"s + '\0');
    CHECK(c.call(MsgType::XS_GET_QUOTA, nul_join({"bogus"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_QUOTA, nul_join({"nodes", "-3"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_SET_QUOTA, nul_join({"nodes"})).is_error("EINVAL"));
}

TEST_CASE("control check verifies the store, unknown commands are EINVAL", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.write("/x/y", "z")));
    CHECK(ok(c.call(MsgType::XS_CONTROL, nul_join({"check"}))));
    CHECK(c.call(MsgType::XS_CONTROL, nul_join({"help"})).payload.find("check") == 0);
    CHECK(c.call(MsgType::XS_CONTROL, nul_join({"quota"})).payload.find("nodes 1000") == 0);
    CHECK(c.call(MsgType::XS_CONTROL, nul_join({"frobnicate"})).is_error("EINVAL"));
    CHECK(c.call(MsgType::XS_CONTROL, "").is_error("EINVAL"));
}

TEST_CASE("removed, server-only and unknown message types are ENOSYS", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    CHECK(c.call(MsgType::XS_RESTRICT, nul_join({"1"})).is_error("ENOSYS"));
    CHECK(c.call(MsgType::XS_WATCH_EVENT, nul_join({"/a", "t"})).is_error("ENOSYS"));
    CHECK(c.call(MsgType::XS_ERROR, nul_join({"EINVAL"})).is_error("ENOSYS"));
    CHECK(c.call(static_cast<MsgType>(27), "").is_error("ENOSYS"));
    CHECK(c.call(MsgType::XS_INVALID, "").is_error("ENOSYS"));
    CHECK(c.call(static_cast<MsgType>(0xdeadbeef), "").is_error("ENOSYS"));
    CHECK(ok(c.write("/still", "served")));
}

TEST_CASE("reset_watches drops the caller's watches and transactions", "[xenstore][protocol]") {
    Harness h;
    RawConn c = h.dom0();
    REQUIRE(ok(c.watch("/w", "tok")));
    REQUIRE(c.event());
    const std::uint32_t t = c.tx_start();
    CHECK(ok(c.call(MsgType::XS_RESET_WATCHES, std::string_view("", 1))));
    CHECK(c.unwatch("/w", "tok").is_error("ENOENT"));
    CHECK(c.read("/local", t).is_error("ENOENT"));
    REQUIRE(ok(c.write("/w", "1")));
    CHECK(c.no_event());
}
