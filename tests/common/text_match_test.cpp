// The tests' regular-expression helper (tests/support/text_match.hpp): what a search and a
// whole match capture, and what they leave when nothing matches.
#include "text_match.hpp"

#include <catch2/catch.hpp>
#include <string>

using hv::test::Groups;

TEST_CASE("re_search finds a match anywhere and returns the whole match and its groups") {
    Groups m;
    REQUIRE(
        hv::test::re_search("Created domain idle1 (id 7)\n", R"(domain (\S+) \(id (\d+)\))", &m));
    REQUIRE(m.size() == 3);
    CHECK(m[0] == "domain idle1 (id 7)");
    CHECK(m[1] == "idle1");
    CHECK(m[2] == "7");
    // A group that took no part is empty; a failed search leaves no groups from before.
    REQUIRE(hv::test::re_search("ab", "a(x)?b", &m));
    REQUIRE(m.size() == 2);
    CHECK(m[1].empty());
    CHECK_FALSE(hv::test::re_search("no digits here", R"((\d+))", &m));
    CHECK(m.empty());
    CHECK_FALSE(hv::test::re_search("", "x"));
}

TEST_CASE("re_match matches the whole text only") {
    CHECK(hv::test::re_match("00:16:3e:5a:00:01", "00:16:3e(:[0-9a-f]{2}){3}"));
    CHECK_FALSE(hv::test::re_match("00:16:3e:5a:00:01\n", "00:16:3e(:[0-9a-f]{2}){3}"));
    CHECK_FALSE(hv::test::re_match("x00:16:3e:5a:00:01", "00:16:3e(:[0-9a-f]{2}){3}"));
    Groups m;
    REQUIRE(hv::test::re_match("-1.5e+3", R"(-?([0-9][0-9.e+\-]*))", &m));
    CHECK(m[1] == "1.5e+3");
}

TEST_CASE("a malformed pattern is the test's bug: it throws") {
    CHECK_THROWS(hv::test::re_search("abc", "(unclosed"));
    CHECK_THROWS(hv::test::re_match("abc", "a{2"));
}
