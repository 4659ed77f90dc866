#include <catch2/catch.hpp>

#include <string>

#include "hv/expected.hpp"
#include "hv/unique_fd.hpp"

#include <fcntl.h>

namespace {

hv::Result<int> parse_positive(int v) {
    if (v <= 0) {
        return hv::fail_errno(EINVAL);
    }
    return v;
}

hv::Result<void> check_even(int v) {
    if (v % 2 != 0) {
        return hv::fail_errno(EDOM);
    }
    return {};
}

hv::Result<int> chained(int v) {
    HV_TRY(check_even(v));
    return v / 2;
}

}  // namespace

TEST_CASE("expected holds a value or an error, never both", "[common]") {
    auto ok = parse_positive(3);
    REQUIRE(ok.has_value());
    CHECK(*ok == 3);
    CHECK(ok.value_or(7) == 3);
    auto bad = parse_positive(-1);
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == std::errc::invalid_argument);
    CHECK(bad.value_or(7) == 7);
}

TEST_CASE("and_then and transform stop at the first error", "[common]") {
    auto doubled = parse_positive(4).transform([](int v) { return v * 2; });
    CHECK(*doubled == 8);
    auto s = parse_positive(0).transform([](int v) { return std::to_string(v); });
    REQUIRE_FALSE(s);
    CHECK(s.error() == std::errc::invalid_argument);
    auto r = parse_positive(5).and_then([](int v) { return chained(v); });
    REQUIRE_FALSE(r);
    CHECK(r.error() == std::errc::argument_out_of_domain);
    CHECK(*parse_positive(6).and_then(chained) == 3);
}

TEST_CASE("expected<void> reports success and carries an error", "[common]") {
    CHECK(check_even(2).has_value());
    auto r = check_even(3);
    REQUIRE_FALSE(r);
    CHECK(r.error().value() == EDOM);
}

TEST_CASE("UniqueFd closes what it owns and hands ownership off with release", "[common]") {
    int raw = -1;
    {
        hv::UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        REQUIRE(fd.valid());
        raw = fd.get();
        hv::UniqueFd moved(std::move(fd));
        CHECK_FALSE(fd.valid());
        CHECK(moved.get() == raw);
    }
    CHECK(::fcntl(raw, F_GETFD) == -1);
    hv::UniqueFd keep(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    int r = keep.release();
    CHECK_FALSE(keep.valid());
    CHECK(::fcntl(r, F_GETFD) != -1);
    ::close(r);
}
