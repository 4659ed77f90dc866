// hvctl's PCI side without hv-min: BDF spellings (arguments, dev-i, vdev-i, registry names),
// the backend keys of `pci = [...]` and of the §7.4 hot-plug transactions (attach, detach
// request, slot removal with renumbering), xl's pci-list table, and the pci verbs' usage
// errors (exit 2, no connection) and failures (exit 1). Against the real hv-min and pciback:
// tests/system/tools_pci_test.cpp.
#include <catch2/catch.hpp>

#include "hvctl_run.hpp"
#include "pci.hpp"

using namespace hv::tools;
using hv::test::hvctl;
using Op = StoreOp::Kind;

namespace {

PciSpec spec(std::string_view s) {
    auto p = parse_pci_spec(s);
    REQUIRE(p);
    return *p;
}

std::string arg_err(std::string_view s) {
    auto a = parse_bdf_arg(s);
    REQUIRE_FALSE(a);
    return a.error();
}

}  // namespace

TEST_CASE("BDF arguments take xl's two forms and nothing else", "[tools][pci]") {
    auto l = parse_bdf_arg("0001:0a:1f.7");
    REQUIRE(l);
    CHECK(*l == PciAddr{1, 0x0a, 0x1f, 7});
    auto s = parse_bdf_arg("00:05.0");
    REQUIRE(s);
    CHECK(*s == PciAddr{0, 0, 5, 0});
    CHECK(to_string(*l) == "0001:0a:1f.7");
    CHECK(to_string(*s) == "0000:00:05.0");
    CHECK(arg_err("00:05") == "'00:05' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(arg_err("00:20.0") == "invalid device '20' (hex 00..1f)");
    CHECK(arg_err("00:05.8") == "invalid function '8' (0..7 or *)");
    CHECK(arg_err("00:05.*") == "'00:05.*' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(arg_err("00:05.0,permissive=1") ==
          "'00:05.0,permissive=1' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(arg_err("00:05.0@02") == "'00:05.0@02' is not a BDF ([DDDD:]BB:DD.F)");
    CHECK(arg_err("") == "'' is not a BDF ([DDDD:]BB:DD.F)");
}

TEST_CASE("dev-i and vdev-i values and registry names parse only in their exact spelling",
          "[tools][pci][hostile]") {
    CHECK(parse_bdf_key("0000:00:05.0") == PciAddr{0, 0, 5, 0});
    CHECK(parse_vdev_key("0000:00:01.03") == PciAddr{0, 0, 1, 3});
    CHECK(parse_registry_name("0001-0a-1f-7") == PciAddr{1, 0x0a, 0x1f, 7});
    CHECK(registry_name(PciAddr{1, 0x0a, 0x1f, 7}) == "0001-0a-1f-7");
    // What a backend (or anyone with write access to the dir) might leave instead.
    for (const char* bad : {"", "0000:00:05", "00:05.0", "0000:00:05.00", "0000:00:20.0",
                            "0000:00:05.8", "0000:00:05.0 ", " 0000:00:05.0", "0000:00:0G.0",
                            "0000:00:0A.0", "0000-00-05-0", "0000:00:05.0\nx", "+000:00:05.0"}) {
        INFO(bad);
        CHECK_FALSE(parse_bdf_key(bad));
    }
    for (const char* bad : {"", "0000:00:01.3", "0000:00:01.08", "0000:00:20.00", "0000:00:01.003",
                            "0000:00:01:03", "../../0:00.00", "0000:00:01.0x"}) {
        INFO(bad);
        CHECK_FALSE(parse_vdev_key(bad));
    }
    for (const char* bad : {"", "0000:00:05.0", "0000-00-05", "0000-00-05-8", "x000-00-05-0"}) {
        INFO(bad);
        CHECK_FALSE(parse_registry_name(bad));
    }
}

TEST_CASE("a domain file's pci list becomes libxl's backend keys slot by slot", "[tools][pci]") {
    const PciSpec specs[] = {spec("00:05.0"), spec("0001:00:02.0@03,permissive=1,msitranslate=1"),
                             spec("02:00.1,power_mgmt=1,rdm_policy=strict")};
    const DeviceReq r = pci_device(specs, "guest", "");
    CHECK(r.type == "pci");
    CHECK(r.devid == 0);
    CHECK(r.backend_domain.empty());
    CHECK(r.frontend_keys.empty());
    const std::map<std::string, std::string> want = {
        {"domain", "guest"},
        {"num_devs", "3"},
        {"dev-0", "0000:00:05.0"},
        {"key-0", "0000:00:05.0"},
        {"opts-0", "msitranslate=0,power_mgmt=0,permissive=0,rdm_policy=relaxed"},
        {"state-0", "1"},
        {"dev-1", "0001:00:02.0"},
        {"key-1", "0001:00:02.0"},
        {"opts-1", "msitranslate=1,power_mgmt=0,permissive=1,rdm_policy=relaxed"},
        {"vdevfn-1", "18"},  // slot 3 << 3, hex as libxl prints it
        {"state-1", "1"},
        {"dev-2", "0000:02:00.1"},
        {"key-2", "0000:02:00.1"},
        {"opts-2", "msitranslate=0,power_mgmt=1,permissive=0,rdm_policy=strict"},
        {"state-2", "1"}};
    CHECK(r.backend_keys == want);
}

TEST_CASE("hot-plug attach is one guarded transaction ending in Reconfiguring", "[tools][pci]") {
    const std::string b = "/local/domain/0/backend/pci/3/0";
    const std::vector<StoreOp> want = {{Op::expect, b + "/state", "4"},
                                       {Op::expect, b + "/num_devs", "2"},
                                       {Op::write, b + "/dev-2", "0000:00:05.0"},
                                       {Op::write, b + "/key-2", "0000:00:05.0"},
                                       {Op::write, b + "/opts-2",
                                        "msitranslate=0,power_mgmt=0,permissive=1,rdm_policy=relaxed"},
                                       {Op::write, b + "/state-2", "1"},
                                       {Op::write, b + "/num_devs", "3"},
                                       {Op::write, b + "/state", "7"}};
    CHECK(pci_attach_ops(b, spec("00:05.0,permissive=1"), 2) == want);
    const std::vector<StoreOp> det = {{Op::expect, b + "/state", "4"},
                                      {Op::expect, b + "/dev-1", "0000:00:05.0"},
                                      {Op::write, b + "/state-1", "5"},
                                      {Op::write, b + "/state", "7"}};
    CHECK(pci_detach_request_ops(b, 1, PciAddr{0, 0, 5, 0}) == det);
}

namespace {

/// Applies ops to a map standing for the backend dir (expects must hold).
std::map<std::string, std::string> apply(std::map<std::string, std::string> dir,
                                         const std::string& b, const std::vector<StoreOp>& ops) {
    for (const StoreOp& op : ops) {
        REQUIRE(op.path.rfind(b + "/", 0) == 0);
        const std::string k = op.path.substr(b.size() + 1);
        switch (op.kind) {
            case Op::expect:
                REQUIRE(dir.count(k) == 1);
                CHECK(dir[k] == op.value);
                break;
            case Op::write:
                dir[k] = op.value;
                break;
            case Op::remove:
                dir.erase(k);
                break;
            case Op::set_perms:
                FAIL("no permissions in a slot's keys: " << op.path);
                break;
        }
    }
    return dir;
}

std::map<std::string, std::string> three_slots() {
    std::map<std::string, std::string> d = {{"num_devs", "3"}, {"state", "4"}, {"domain", "g"}};
    for (unsigned i = 0; i < 3; ++i) {
        const std::string n = std::to_string(i);
        const std::string bdf = "0001:00:0" + std::to_string(i + 2) + ".0";
        d["dev-" + n] = bdf;
        d["key-" + n] = bdf;
        d["opts-" + n] = "opts" + n;
        d["state-" + n] = "3";
        d["vdev-" + n] = "0000:00:0" + std::to_string(i) + ".00";
    }
    d["vdevfn-1"] = "18";  // only slot 1 asked for a virtual slot
    d["name-2"] = "two";
    return d;
}

}  // namespace

TEST_CASE("removing a slot deletes its keys and renumbers the higher ones down",
          "[tools][pci]") {
    const std::string b = "/b";
    const auto d = three_slots();
    SECTION("the first of three") {
        const auto after = apply(d, b, pci_remove_slot_ops(b, d, 0, 3));
        std::map<std::string, std::string> want = {{"num_devs", "2"},
                                                   {"state", "4"},
                                                   {"domain", "g"},
                                                   {"dev-0", "0001:00:03.0"},
                                                   {"key-0", "0001:00:03.0"},
                                                   {"opts-0", "opts1"},
                                                   {"state-0", "3"},
                                                   {"vdev-0", "0000:00:01.00"},
                                                   {"vdevfn-0", "18"},
                                                   {"dev-1", "0001:00:04.0"},
                                                   {"key-1", "0001:00:04.0"},
                                                   {"opts-1", "opts2"},
                                                   {"state-1", "3"},
                                                   {"vdev-1", "0000:00:02.00"},
                                                   {"name-1", "two"}};
        CHECK(after == want);
    }
    SECTION("the middle one: slot 1's vdevfn does not survive on the slot that replaces it") {
        const auto after = apply(d, b, pci_remove_slot_ops(b, d, 1, 3));
        CHECK(after.at("num_devs") == "2");
        CHECK(after.at("dev-0") == "0001:00:02.0");
        CHECK(after.at("dev-1") == "0001:00:04.0");
        CHECK(after.at("name-1") == "two");
        CHECK(after.count("vdevfn-1") == 0);
        CHECK(after.count("dev-2") == 0);
        CHECK(after.count("name-2") == 0);
        CHECK(after.size() == 3 + 5 + 6);
    }
    SECTION("the last one") {
        const auto after = apply(d, b, pci_remove_slot_ops(b, d, 2, 3));
        CHECK(after.at("num_devs") == "2");
        CHECK(after.count("dev-2") == 0);
        CHECK(after.count("name-2") == 0);
        CHECK(after.at("vdevfn-1") == "18");
    }
    SECTION("each moved value and num_devs are guarded") {
        const auto ops = pci_remove_slot_ops(b, d, 0, 3);
        CHECK(ops.front() == StoreOp{Op::expect, "/b/num_devs", "3"});
        std::size_t guards = 0;
        for (const StoreOp& op : ops) {
            guards += op.kind == Op::expect;
        }
        CHECK(guards == 1 + 6 + 6);  // num_devs, slot 1's six keys, slot 2's six keys
    }
}

TEST_CASE("pci-list prints xl's table from validated backend values", "[tools][pci][hostile]") {
    std::vector<PciSlot> slots(4);
    slots[0] = {0, PciAddr{0, 0, 5, 0}, PciAddr{0, 0, 0, 0}, 3};
    slots[1] = {1, PciAddr{1, 0, 2, 1}, PciAddr{0, 0, 0x1f, 7}, 3};
    slots[2] = {2, PciAddr{1, 0, 3, 0}, std::nullopt, 1};  // not exported yet, or vdev malformed
    slots[3] = {3, std::nullopt, PciAddr{0, 0, 1, 0}, 3};  // dev-3 malformed: not printed
    CHECK(format_pci_list(slots) ==
          "Vdev Device\n"
          "00.0 0000:00:05.0\n"
          "1f.7 0001:00:02.1\n"
          "--.- 0001:00:03.0\n");
    CHECK(format_pci_list({}) == "Vdev Device\n");
}

TEST_CASE("pci verbs' argument errors exit 2 without connecting", "[tools][pci][hostile]") {
    struct Case {
        std::vector<std::string> args;
        std::string err;
    };
    const Case cases[] = {
        {{"pci-assignable-add"},
         "hvctl pci-assignable-add: which device?\nusage: hvctl pci-assignable-add BDF\n"},
        {{"pci-assignable-add", "00:05.0", "x"},
         "hvctl pci-assignable-add: too many arguments\nusage: hvctl pci-assignable-add BDF\n"},
        {{"pci-assignable-add", "-x"},
         "hvctl pci-assignable-add: unknown option '-x'\nusage: hvctl pci-assignable-add BDF\n"},
        {{"pci-assignable-add", "00:5"},
         "hvctl pci-assignable-add: bad BDF '00:5': '00:5' is not a BDF ([DDDD:]BB:DD.F)\n"
         "usage: hvctl pci-assignable-add BDF\n"},
        {{"pci-assignable-remove", "-r"},
         "hvctl pci-assignable-remove: which device?\nusage: hvctl pci-assignable-remove [-r] "
         "BDF\n"},
        {{"pci-assignable-remove", "-f", "00:05.0"},
         "hvctl pci-assignable-remove: unknown option '-f'\nusage: hvctl pci-assignable-remove "
         "[-r] BDF\n"},
        {{"pci-assignable-remove", "00:05.9"},
         "hvctl pci-assignable-remove: bad BDF '00:05.9': invalid function '9' (0..7 or *)\n"
         "usage: hvctl pci-assignable-remove [-r] BDF\n"},
        {{"pci-assignable-list", "x"},
         "hvctl pci-assignable-list: takes no arguments\nusage: hvctl pci-assignable-list\n"},
        {{"pci-assignable-list", "-n"},
         "hvctl pci-assignable-list: unknown option '-n'\nusage: hvctl pci-assignable-list\n"},
        {{"pci-attach", "g"},
         "hvctl pci-attach: needs a domain and a BDF\nusage: hvctl pci-attach NAME|ID "
         "BDF[@VSLOT][,permissive=1,...][,backend=NAME]\n"},
        {{"pci-attach", "g", "00:05.0", "seize=1"},
         "hvctl pci-attach: too many arguments\nusage: hvctl pci-attach NAME|ID "
         "BDF[@VSLOT][,permissive=1,...][,backend=NAME]\n"},
        {{"pci-attach", "g", "00:05.0", "backend="},
         "hvctl pci-attach: bad pci spec '00:05.0,backend=': backend needs a domain name\n"
         "usage: hvctl pci-attach NAME|ID BDF[@VSLOT][,permissive=1,...][,backend=NAME]\n"},
        {{"pci-attach", "g", "00:05.0,bogus=1"},
         "hvctl pci-attach: bad pci spec '00:05.0,bogus=1': unknown option 'bogus'\nusage: hvctl "
         "pci-attach NAME|ID BDF[@VSLOT][,permissive=1,...][,backend=NAME]\n"},
        {{"pci-attach", "g", "00:05.*"},
         "hvctl pci-attach: '00:05.*': attach each function (.F) by itself\nusage: hvctl "
         "pci-attach NAME|ID BDF[@VSLOT][,permissive=1,...][,backend=NAME]\n"},
        {{"pci-detach", "g"},
         "hvctl pci-detach: needs a domain and a BDF\nusage: hvctl pci-detach [-f|--force] "
         "NAME|ID BDF\n"},
        {{"pci-detach", "-r", "g", "00:05.0"},
         "hvctl pci-detach: unknown option '-r'\nusage: hvctl pci-detach [-f|--force] NAME|ID "
         "BDF\n"},
        {{"pci-detach", "g", "00:05.0,permissive=1"},
         "hvctl pci-detach: bad BDF '00:05.0,permissive=1': '00:05.0,permissive=1' is not a BDF "
         "([DDDD:]BB:DD.F)\nusage: hvctl pci-detach [-f|--force] NAME|ID BDF\n"},
        {{"pci-list"}, "hvctl pci-list: which domain?\nusage: hvctl pci-list NAME|ID\n"},
        {{"pci-list", "a", "b"}, "hvctl pci-list: too many arguments\nusage: hvctl pci-list NAME|ID\n"},
    };
    for (const Case& c : cases) {
        INFO(c.args[0] << " " << (c.args.size() > 1 ? c.args[1] : ""));
        const auto r = hvctl(c.args);
        CHECK(r.rc == kExitUsage);
        CHECK(r.err == c.err);
        CHECK(r.out.empty());
        CHECK_FALSE(r.connected);
    }
}

TEST_CASE("pci verbs exit 1 when hv-min cannot be reached", "[tools][pci]") {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"pci-assignable-add", "00:05.0"},
          {"pci-assignable-remove", "-r", "00:05.0"},
          {"pci-assignable-list"},
          {"pci-attach", "g", "00:05.0"},
          {"pci-detach", "-f", "g", "00:05.0"},
          {"pci-list", "g"}}) {
        INFO(args[0]);
        const auto r = hvctl(args);
        CHECK(r.rc == kExitFailure);
        CHECK(r.connected);
        CHECK(r.err.rfind("hvctl: cannot reach hv-min in /nonexistent/rundir", 0) == 0);
    }
}

TEST_CASE("an unanswered hot-plug attach is withdrawn to exactly the bus before it",
          "[tools][pci]") {
    const std::string b = "/b";
    const auto d = three_slots();
    const PciSpec s = spec("0001:00:07.0@1a,permissive=1");
    const auto requested = apply(d, b, pci_attach_ops(b, s, 3));
    CHECK(requested.at("state") == "7");
    CHECK(requested.at("vdevfn-3") == "d0");
    CHECK(apply(requested, b, pci_undo_attach_ops(b, s, 3)) == d);
    // Guarded by what the request wrote: another device in slot 3 is not taken back.
    const auto ops = pci_undo_attach_ops(b, spec("0001:00:08.0"), 3);
    CHECK(std::find(ops.begin(), ops.end(),
                    StoreOp{Op::expect, b + "/dev-3", "0001:00:08.0"}) != ops.end());
    CHECK(std::find(ops.begin(), ops.end(), StoreOp{Op::expect, b + "/state-3", "1"}) !=
          ops.end());
}
