// xl.cfg syntax and DomainConfig interpretation: good files, and every error class with
// its exact `source:line:` position.
#include "xlcfg.hpp"

#include <catch2/catch.hpp>
#include <fstream>

#include "temp_dir.hpp"

using namespace hv::tools;

namespace {

const char* const good_file = R"(# a domain file in xl.cfg syntax
name = "guest1"
memory = 256
maxmem = 0x200
vcpus = 2
kernel = '/usr/lib/hvkit/hv-guest'
cmdline = "run --verbose"; on_crash = 'preserve'
disk = [ 'format=raw, vdev=xvda, access=rw, target=/var/lib/img/g1.img',
         'phy:/dev/vg0/data,xvdb,w',   # positional, deprecated prefix
         "file:/srv/iso,hdc:cdrom,r",
       ]
vif = [ 'bridge=xenbr0, mac=00:16:3e:01:02:03, rate=10Mb/s@20ms' ]
pci = [ '0000:03:00.1,permissive=1' ]
driver_domain = 1
trusted = 0
)";

DomainConfig parse_ok(std::string_view text, std::span<const std::string> overrides = {}) {
    auto r = parse_domain_config(text, "t.cfg", overrides);
    if (!r) {
        FAIL("unexpected error: " << r.error().message());
    }
    return *r;
}

ConfigError parse_err(std::string_view text, std::span<const std::string> overrides = {}) {
    auto r = parse_domain_config(text, "t.cfg", overrides);
    if (r) {
        FAIL("parsed although it should not have: " << text);
    }
    return r.error();
}

const std::string base = "name='d'\nmemory=64\nkernel='/bin/true'\n";

}  // namespace

TEST_CASE("a complete domain file parses into every typed field", "[tools][xlcfg]") {
    const DomainConfig c = parse_ok(good_file);
    CHECK(c.name == "guest1");
    CHECK(c.memory_mib == 256);
    CHECK(c.maxmem_mib == 512);
    CHECK(c.vcpus == 2);
    CHECK(c.kernel == "/usr/lib/hvkit/hv-guest");
    CHECK(c.cmdline == "run --verbose");
    CHECK(c.on_crash == ActionOnShutdown::preserve);
    CHECK(c.on_poweroff == ActionOnShutdown::destroy);
    REQUIRE(c.disks.size() == 3);
    CHECK(c.disks[0].target == "/var/lib/img/g1.img");
    CHECK(c.disks[0].virtual_device == 51712);
    CHECK(c.disks[1].target == "/dev/vg0/data");
    CHECK(c.disks[1].prefix == "phy");
    CHECK(c.disks[1].virtual_device == 51728);
    CHECK(std::string(c.disks[1].mode()) == "w");
    CHECK(c.disks[2].is_cdrom);
    CHECK_FALSE(c.disks[2].readwrite);
    CHECK(c.disks[2].virtual_device == (22u << 8));
    REQUIRE(c.vifs.size() == 1);
    CHECK(c.vifs[0].bridge == "xenbr0");
    CHECK(c.vifs[0].mac_string() == "00:16:3e:01:02:03");
    REQUIRE(c.vifs[0].rate.has_value());
    CHECK(c.vifs[0].rate->bytes_per_interval == 25000);
    CHECK(c.vifs[0].rate->interval_usecs == 20000);
    CHECK(c.vifs[0].devid == 0u);
    REQUIRE(c.pcis.size() == 1);
    CHECK(c.pcis[0].bdf() == "0000:03:00.1");
    CHECK(c.pcis[0].permissive);
    CHECK(c.driver_domain);
    CHECK_FALSE(c.trusted);
    CHECK(c.warnings.empty());
}

TEST_CASE("maxmem defaults to memory and devices default to none", "[tools][xlcfg]") {
    const DomainConfig c = parse_ok(base);
    CHECK(c.maxmem_mib == 64);
    CHECK(c.vcpus == 1);
    CHECK(c.disks.empty());
    CHECK(c.vifs.empty());
    CHECK(c.pcis.empty());
    CHECK_FALSE(c.trusted);
}

TEST_CASE("strings take both quote styles and xl's escapes", "[tools][xlcfg]") {
    auto s = parse_cfg_syntax(R"(a = "x\ty\"z\\" ; b = 'it\'s' ; c = "\x41\102\n")", "s");
    REQUIRE(s);
    REQUIRE(s->size() == 3);
    CHECK((*s)[0].value.text == "x\ty\"z\\");
    CHECK((*s)[1].value.text == "it's");
    CHECK((*s)[2].value.text == "AB\n");
}

TEST_CASE("lists span lines, allow a trailing comma, comments and empty lists", "[tools][xlcfg]") {
    auto s = parse_cfg_syntax("l = [ # open\n 'a', # one\n\n \"b\",\n 3,\n]\ne = []\n", "s");
    REQUIRE(s);
    REQUIRE((*s)[0].value.items.size() == 3);
    CHECK((*s)[0].value.items[0].text == "a");
    CHECK((*s)[0].value.items[0].line == 2);
    CHECK((*s)[0].value.items[1].line == 4);
    CHECK((*s)[0].value.items[2].is_number);
    CHECK((*s)[1].value.items.empty());
}

TEST_CASE("+= concatenates strings and lists as xl does", "[tools][xlcfg]") {
    auto s = parse_cfg_syntax("a='x'\na+='y'\nl=['1']\nl+=['2','3']\nn+=['z']\n", "s");
    REQUIRE(s);
    REQUIRE(s->size() == 3);
    CHECK((*s)[0].value.text == "xy");
    CHECK((*s)[1].value.items.size() == 3);
    CHECK((*s)[2].value.items.size() == 1);
}

TEST_CASE("CRLF line ends and a missing final newline are accepted", "[tools][xlcfg]") {
    const DomainConfig c = parse_ok("name='d'\r\nmemory=64\r\nkernel='/bin/true'");
    CHECK(c.kernel == "/bin/true");
}

TEST_CASE("root and extra compose the command line unless cmdline is set", "[tools][xlcfg]") {
    CHECK(parse_ok(base + "root='/dev/xvda1'\nextra='quiet'\n").cmdline == "root=/dev/xvda1 quiet");
    CHECK(parse_ok(base + "extra='a b'\n").cmdline == "a b");
    const DomainConfig c = parse_ok(base + "extra='x'\ncmdline='y'\n");
    CHECK(c.cmdline == "y");
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0] == "t.cfg:4: ignoring 'extra' because 'cmdline' is set");
}

TEST_CASE("command-line KEY=VALUE overrides replace file values", "[tools][xlcfg]") {
    const std::vector<std::string> o = {"memory=128", "name=\"other\"", "vif=['bridge=br1']"};
    const DomainConfig c = parse_ok(base, o);
    CHECK(c.memory_mib == 128);
    CHECK(c.name == "other");
    REQUIRE(c.vifs.size() == 1);
    CHECK(c.vifs[0].bridge == "br1");
}

TEST_CASE("a bad override is reported with its argument position", "[tools][xlcfg]") {
    const std::vector<std::string> o = {"memory=128", "memory"};
    auto e = parse_err(base, o);
    CHECK(e.code == Errc::syntax);
    CHECK(e.message() == "<command line>:2: 'memory' is not KEY=VALUE");
    const std::vector<std::string> o2 = {"bogus=1"};
    auto e2 = parse_err(base, o2);
    CHECK(e2.code == Errc::unknown_key);
    CHECK(e2.message() == "<command line>:1: unknown key 'bogus'");
    const std::vector<std::string> o3 = {"memory='x"};
    CHECK(parse_err(base, o3).message().rfind("<command line>:1: unterminated string", 0) == 0);
}

TEST_CASE("syntax errors name the exact line", "[tools][xlcfg][hostile]") {
    struct Case {
        std::string text;
        std::string message;
    };
    const Case cases[] = {
        {base + "cmdline = \"abc\n", "t.cfg:4: unterminated string (missing closing \")"},
        {base + "cmdline = 'abc", "t.cfg:4: unterminated string (missing closing ')"},
        {base + "cmdline = \"a\\q\"\n", "t.cfg:4: unknown escape \\q in a string"},
        {base + "cmdline = \"a\\x4\"\n", "t.cfg:4: \\x in a string needs two hex digits"},
        {base + "cmdline = \"a\\x00\"\n", "t.cfg:4: \\x00 (NUL) is not allowed in a string"},
        {base + "cmdline = \"a\\0\"\n", "t.cfg:4: octal escape in a string must be \\001..\\377"},
        {base + "cmdline = \"a\\\n", "t.cfg:4: unterminated string (backslash at end of line)"},
        {base + "\n\ndisk = [ 'a',\n 'b'\n", "t.cfg:6: unterminated list for 'disk' (missing ']')"},
        {base + "disk = [ 'a' 'b' ]\n", "t.cfg:4: expected ',' or ']' in list, found a string"},
        {base + "disk = [ , ]\n", "t.cfg:4: expected a list item, found ','"},
        {base + "disk = [ 'a',, ]\n", "t.cfg:4: expected a list item, found ','"},
        {base + "disk = [ ['a'] ]\n", "t.cfg:4: nested lists are not supported"},
        {base + "cmdline =\n'x'\n", "t.cfg:4: missing value for 'cmdline'"},
        {base + "cmdline 'x'\n", "t.cfg:4: expected '=' after 'cmdline', found a string"},
        {base + "cmdline = 'x' 'y'\n",
         "t.cfg:4: expected end of line after the value of 'cmdline', found a string"},
        {base + "= 'x'\n", "t.cfg:4: expected a key, found '='"},
        {base + "vcpus = -1\n", "t.cfg:4: unexpected '-'"},
        {base + "vcpus + 1\n", "t.cfg:4: unexpected '+' (did you mean '+='?)"},
        {base + "\x01 = 1\n", "t.cfg:4: unexpected byte 0x01"},
        {base + "cmdline='x'\ncmdline+=['y']\n",
         "t.cfg:5: cannot add a list to the string 'cmdline'"},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        auto e = parse_err(c.text);
        CHECK(e.code == Errc::syntax);
        CHECK(e.message() == c.message);
    }
}

TEST_CASE("a key set twice is a duplicate, reported at the second line",
          "[tools][xlcfg][hostile]") {
    auto e = parse_err(base + "\nmemory = 128\n");
    CHECK(e.code == Errc::duplicate_key);
    CHECK(e.message() ==
          "t.cfg:5: duplicate key 'memory' (first set on line 2; use += to extend it)");
}

TEST_CASE("unknown keys are refused with their line", "[tools][xlcfg][hostile]") {
    auto e = parse_err(base + "builder = 'hvm'\n");
    CHECK(e.code == Errc::unknown_key);
    CHECK(e.message() == "t.cfg:4: unknown key 'builder'");
    auto e2 = parse_err("Name = 'x'\n" + base);
    CHECK(e2.code == Errc::unknown_key);
    CHECK(e2.line == 1);
}

TEST_CASE("missing required keys are reported against the file", "[tools][xlcfg][hostile]") {
    auto e = parse_err("memory=64\nkernel='/bin/true'\n");
    CHECK(e.code == Errc::missing_key);
    CHECK(e.message() == "t.cfg: missing required key 'name'");
    CHECK(parse_err("name='a'\nkernel='/bin/true'\n").message() ==
          "t.cfg: missing required key 'memory'");
    CHECK(parse_err("name='a'\nmemory=1\n").message() == "t.cfg: missing required key 'kernel'");
    CHECK(parse_err("").code == Errc::missing_key);
}

TEST_CASE("values of the wrong type or range are refused with their line",
          "[tools][xlcfg][hostile]") {
    struct Case {
        std::string text;
        std::string message;
    };
    const Case cases[] = {
        {"name='d'\nkernel='/bin/true'\nmemory='lots'\n",
         "t.cfg:3: 'memory' must be a decimal or 0x-hex integer, not 'lots'"},
        {"name='d'\nkernel='/bin/true'\nmemory=0\n",
         "t.cfg:3: 'memory' = 0 is out of range [1, 1048576]"},
        {"name='d'\nkernel='/bin/true'\nmemory=010\n",
         "t.cfg:3: 'memory' must be a decimal or 0x-hex integer, not '010'"},
        {"name='d'\nkernel='/bin/true'\nmemory=99999999999999999999999\n",
         "t.cfg:3: 'memory' must be a decimal or 0x-hex integer, not '99999999999999999999999'"},
        {"name='d'\nkernel='/bin/true'\nmemory=0x1g\n",
         "t.cfg:3: 'memory' must be a decimal or 0x-hex integer, not '0x1g'"},
        {"name='d'\nkernel='/bin/true'\nmemory=[1]\n",
         "t.cfg:3: 'memory' must be an integer, not a list"},
        {base + "maxmem = 32\n", "t.cfg:4: maxmem (32) is less than memory (64)"},
        {base + "vcpus = 0\n", "t.cfg:4: 'vcpus' = 0 is out of range [1, 128]"},
        {base + "trusted = 2\n", "t.cfg:4: 'trusted' must be 0 or 1"},
        {base + "driver_domain = 'yes'\n", "t.cfg:4: 'driver_domain' must be 0 or 1"},
        {base + "cmdline = ['a']\n", "t.cfg:4: 'cmdline' must be a string, not a list"},
        {base + "disk = 'xvda'\n", "t.cfg:4: 'disk' must be a list: disk = [ '...', ... ]"},
        {base + "type = 'hvm'\n",
         "t.cfg:4: type 'hvm' is not supported: domains here are processes, type = \"pv\""},
        {base + "on_crash = 'explode'\n",
         "t.cfg:4: 'on_crash' = 'explode': use destroy, restart, rename-restart, preserve, "
         "coredump-destroy, coredump-restart or soft-reset"},
        {"name='12'\nmemory=64\nkernel='/bin/true'\n",
         "t.cfg:1: invalid domain name '12': use 1-64 of [A-Za-z0-9_.-], not all digits, not "
         "Domain-0"},
        {"name='a/b'\nmemory=64\nkernel='/bin/true'\n",
         "t.cfg:1: invalid domain name 'a/b': use 1-64 of [A-Za-z0-9_.-], not all digits, not "
         "Domain-0"},
        {"name='d'\nmemory=64\nkernel=''\n", "t.cfg:3: 'kernel' is empty"},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        auto e = parse_err(c.text);
        CHECK(e.code == Errc::bad_value);
        CHECK(e.message() == c.message);
    }
}

TEST_CASE("a bad disk spec is reported at the line of its list item", "[tools][xlcfg][hostile]") {
    auto e = parse_err(base + "disk = [ 'phy:/dev/a,xvda,w',\n  'phy:/dev/b,xvdb,q' ]\n");
    CHECK(e.code == Errc::bad_disk);
    CHECK(e.message() ==
          "t.cfg:5: disk 'phy:/dev/b,xvdb,q': unknown value for access: 'q' (use r, ro, w or rw)");
    auto dup = parse_err(base + "disk = [ 'phy:/dev/a,xvda,w', 'phy:/dev/b,51712,w' ]\n");
    CHECK(dup.code == Errc::bad_disk);
    CHECK(dup.message() ==
          "t.cfg:4: disk 'phy:/dev/b,51712,w': vdev 51712 is already used by disk vdev xvda");
    auto ctl = parse_err(base + "disk = [ \"vdev=\\x01,target=/x\" ]\n");
    CHECK(ctl.message() ==
          "t.cfg:4: disk 'vdev=\\x01,target=/x': invalid vdev '\\x01': use "
          "xvdX, hdX, sdX, dNpM or a number");
}

TEST_CASE("a bad vif spec is reported at the line of its list item", "[tools][xlcfg][hostile]") {
    auto e = parse_err(base + "vif = [\n 'bridge=xenbr0',\n 'mac=zz' ]\n");
    CHECK(e.code == Errc::bad_vif);
    CHECK(e.message() == "t.cfg:6: vif 'mac=zz': invalid mac 'zz' (use xx:xx:xx:xx:xx:xx)");
    auto dup = parse_err(base + "vif = [ 'bridge=a', 'devid=0' ]\n");
    CHECK(dup.code == Errc::bad_vif);
    CHECK(dup.message() == "t.cfg:4: vif 'devid=0': devid 0 is already used");
}

TEST_CASE("a bad pci spec is reported at the line of its list item", "[tools][xlcfg][hostile]") {
    auto e = parse_err(base + "pci = [ '03:00.8' ]\n");
    CHECK(e.code == Errc::bad_pci);
    CHECK(e.message() == "t.cfg:4: pci '03:00.8': invalid function '8' (0..7 or *)");
    auto dup = parse_err(base + "pci = [ '03:00.1', '0000:03:00.1,seize=1' ]\n");
    CHECK(dup.message() ==
          "t.cfg:4: pci '0000:03:00.1,seize=1': device 0000:03:00.1 is listed twice");
}

TEST_CASE("files are read from disk and unreadable ones are an io error", "[tools][xlcfg]") {
    hv::test::TempDir dir;
    const std::string path = (dir / "g.cfg").string();
    {
        std::ofstream f(path);
        f << good_file;
    }
    auto r = parse_domain_file(path);
    REQUIRE(r);
    CHECK(r->name == "guest1");
    auto bad = parse_domain_file((dir / "nope.cfg").string());
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == Errc::io);
    CHECK(bad.error().message() == (dir / "nope.cfg").string() + ": No such file or directory");
    {
        std::ofstream f(path);
        f << base << "memory = 1\n";
    }
    auto dup = parse_domain_file(path);
    REQUIRE_FALSE(dup);
    CHECK(dup.error().message() ==
          path + ":4: duplicate key 'memory' (first set on line 2; use += to extend it)");
}

TEST_CASE("oversized input is refused rather than parsed", "[tools][xlcfg][hostile]") {
    std::string big(2u << 20, '#');
    auto e = parse_err(big);
    CHECK(e.code == Errc::syntax);
    CHECK(e.message() == "t.cfg: file is larger than 1 MiB");
}

TEST_CASE("error codes compare to Errc and have readable category messages", "[tools][xlcfg]") {
    const std::error_code ec = make_error_code(Errc::bad_vif);
    CHECK(ec == Errc::bad_vif);
    CHECK(std::string(ec.category().name()) == "xlcfg");
    CHECK(ec.message() == "bad vif spec");
}
