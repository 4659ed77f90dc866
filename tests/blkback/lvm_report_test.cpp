// lvm_parse_reports(): LVM's JSON reports → LvmVolume, and everything it refuses. No root needed.
#include <catch2/catch.hpp>
#include <string>

#include "blkback/lvm.hpp"

namespace hv::blk::test {
namespace {

std::string seg_row(const std::string& lv, const std::string& start, const std::string& size,
                    const std::string& type, const std::string& stripes,
                    const std::string& stripe_size, const std::string& devices,
                    const std::string& lv_size = "16777216", const std::string& ext = "1048576") {
    return R"({"lv_name":")" + lv + R"(", "vg_name":"vg0", "lv_size":")" + lv_size +
           R"(", "vg_extent_size":")" + ext + R"(", "seg_start":")" + start +
           R"(", "seg_size":")" + size + R"(", "segtype":")" + type + R"(", "stripes":")" +
           stripes + R"(", "stripe_size":")" + stripe_size + R"(", "devices":")" + devices +
           R"("})";
}

std::string lvs_json(const std::vector<std::string>& rows) {
    std::string out = "  {\n      \"report\": [\n          {\n              \"seg\": [\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
        out += "                  " + rows[i] + (i + 1 < rows.size() ? ",\n" : "\n");
    }
    return out + "              ]\n          }\n      ]\n  }\n";
}

const std::string pvs_two = R"({"report": [{"pv": [
    {"pv_name":"/dev/loop4", "pe_start":"1048576"},
    {"pv_name":"/dev/loop5", "pe_start":"2097152"}]}]})";

/// An LV with a linear segment on loop4 then a 2-way striped one over loop4 and loop5.
std::string good_lvs() {
    return lvs_json({seg_row("data", "0", "4194304", "linear", "1", "0", "/dev/loop4(3)"),
                     seg_row("data", "4194304", "12582912", "striped", "2", "65536",
                             "/dev/loop4(7),/dev/loop5(0)"),
                     seg_row("other", "0", "1048576", "linear", "1", "0", "/dev/loop5(9)",
                             "1048576")});
}

TEST_CASE("an LV with linear and striped segments is mapped onto its PVs", "[blkback][lvm]") {
    auto v = lvm_parse_reports("vg0", "data", good_lvs(), pvs_two);
    REQUIRE(v.has_value());
    CHECK(v->dev_path() == "/dev/vg0/data");
    CHECK(v->size_bytes == 16777216);
    CHECK(v->extent_size_bytes == 1048576);
    REQUIRE(v->segments.size() == 2);
    const auto& lin = v->segments[0];
    CHECK_FALSE(lin.striped);
    REQUIRE(lin.areas.size() == 1);
    CHECK(lin.areas[0].pv_path == "/dev/loop4");
    CHECK(lin.areas[0].start_extent == 3);
    CHECK(lin.areas[0].pv_offset_bytes == 1048576 + 3 * 1048576);
    const auto& str = v->segments[1];
    CHECK(str.striped);
    CHECK(str.stripe_size_bytes == 65536);
    REQUIRE(str.areas.size() == 2);
    CHECK(str.areas[0].pv_offset_bytes == 1048576 + 7 * 1048576);
    CHECK(str.areas[1].pv_path == "/dev/loop5");
    CHECK(str.areas[1].pe_start_bytes == 2097152);
    CHECK(str.areas[1].pv_offset_bytes == 2097152);
}

TEST_CASE("segments reported out of order are sorted", "[blkback][lvm]") {
    auto lvs = lvs_json({seg_row("data", "4194304", "12582912", "striped", "2", "65536",
                                 "/dev/loop4(7),/dev/loop5(0)"),
                         seg_row("data", "0", "4194304", "linear", "1", "0", "/dev/loop4(3)")});
    auto v = lvm_parse_reports("vg0", "data", lvs, pvs_two);
    REQUIRE(v.has_value());
    CHECK(v->segments[0].start_bytes == 0);
    CHECK(v->segments[1].start_bytes == 4194304);
}

TEST_CASE("a one-stripe striped segment is served as linear", "[blkback][lvm]") {
    auto lvs = lvs_json({seg_row("data", "0", "16777216", "striped", "1", "65536", "/dev/loop4(0)")});
    auto v = lvm_parse_reports("vg0", "data", lvs, pvs_two);
    REQUIRE(v.has_value());
    CHECK_FALSE(v->segments[0].striped);
    CHECK(v->segments[0].stripe_size_bytes == 0);
}

Errc parse_error(const std::string& lvs, const std::string& pvs = pvs_two) {
    auto v = lvm_parse_reports("vg0", "data", lvs, pvs);
    REQUIRE_FALSE(v.has_value());
    REQUIRE(v.error().category() == blk_category());
    return static_cast<Errc>(v.error().value());
}

TEST_CASE("segment types other than linear and striped are unsupported", "[blkback][lvm][hostile]") {
    for (const char* t : {"thin", "raid1", "mirror", "cache", "vdo", "error", "zero"}) {
        INFO(t);
        CHECK(parse_error(lvs_json({seg_row("data", "0", "16777216", t, "1", "0",
                                            "/dev/loop4(0)")})) == Errc::lvm_unsupported);
    }
}

TEST_CASE("an LV missing from the report is not found", "[blkback][lvm][hostile]") {
    CHECK(parse_error(lvs_json({})) == Errc::lvm_not_found);
    CHECK(parse_error(lvs_json({seg_row("other", "0", "16777216", "linear", "1", "0",
                                        "/dev/loop4(0)")})) == Errc::lvm_not_found);
}

TEST_CASE("a PV that was not scanned makes the LV not found", "[blkback][lvm][hostile]") {
    auto lvs = lvs_json({seg_row("data", "0", "16777216", "striped", "2", "65536",
                                 "/dev/loop4(0),[unknown](0)")});
    CHECK(parse_error(lvs) == Errc::lvm_not_found);
    // pvs lists the missing PV as "[unknown]" too; that must not make it usable.
    const std::string pvs_unknown = R"({"report": [{"pv": [
        {"pv_name":"/dev/loop4", "pe_start":"1048576"},
        {"pv_name":"[unknown]", "pe_start":"1048576"}]}]})";
    CHECK(parse_error(lvs, pvs_unknown) == Errc::lvm_not_found);
    // A PV named in the LV but absent from pvs.
    auto lvs2 = lvs_json({seg_row("data", "0", "16777216", "striped", "2", "65536",
                                  "/dev/loop4(0),/dev/loop9(0)")});
    CHECK(parse_error(lvs2) == Errc::lvm_not_found);
}

TEST_CASE("malformed or inconsistent reports are refused", "[blkback][lvm][hostile]") {
    const auto bad = [](const std::string& lvs, const std::string& pvs = pvs_two) {
        return parse_error(lvs, pvs) == Errc::lvm_report;
    };
    auto one = [](const std::string& start, const std::string& size, const std::string& type,
                  const std::string& stripes, const std::string& ssize, const std::string& devs,
                  const std::string& lv_size = "16777216", const std::string& ext = "1048576") {
        return lvs_json({seg_row("data", start, size, type, stripes, ssize, devs, lv_size, ext)});
    };
    SECTION("not JSON") { CHECK(bad("WARNING: something\n")); }
    SECTION("truncated") { CHECK(bad(good_lvs().substr(0, 120))); }
    SECTION("trailing bytes") { CHECK(bad(good_lvs() + "x")); }
    SECTION("nested too deep") { CHECK(bad(std::string(100, '[') + std::string(100, ']'))); }
    SECTION("wrong shape") { CHECK(bad(R"({"report": {}})")); }
    SECTION("pvs not JSON") { CHECK(bad(good_lvs(), "{")); }
    SECTION("number not decimal") { CHECK(bad(one("0", "16M", "linear", "1", "0", "/dev/loop4(0)"))); }
    SECTION("negative") { CHECK(bad(one("-0", "16777216", "linear", "1", "0", "/dev/loop4(0)"))); }
    SECTION("field missing") {
        CHECK(bad(R"({"report":[{"seg":[{"lv_name":"data","vg_name":"vg0"}]}]})"));
    }
    SECTION("numbers as JSON numbers") {
        CHECK(bad(R"({"report":[{"seg":[{"lv_name":"data","vg_name":"vg0","lv_size":16}]}]})"));
    }
    SECTION("stripe count differs from devices") {
        CHECK(bad(one("0", "16777216", "striped", "3", "65536", "/dev/loop4(0),/dev/loop5(0)")));
    }
    SECTION("devices syntax") {
        for (const char* d : {"/dev/loop4", "/dev/loop4(x)", "/dev/loop4(0)/dev/loop5(0)",
                              "(0)", "/dev/loop4(0),", ""}) {
            INFO(d);
            CHECK(bad(one("0", "16777216", "linear", "1", "0", d)));
        }
    }
    SECTION("gap between segments") {
        CHECK(bad(lvs_json({seg_row("data", "0", "4194304", "linear", "1", "0", "/dev/loop4(0)"),
                            seg_row("data", "5242880", "11534336", "linear", "1", "0",
                                    "/dev/loop5(0)")})));
    }
    SECTION("segments do not add up to the LV size") {
        CHECK(bad(one("0", "8388608", "linear", "1", "0", "/dev/loop4(0)")));
    }
    SECTION("segment not a whole number of extents per stripe") {
        CHECK(bad(one("0", "16777216", "striped", "2", "65536", "/dev/loop4(0),/dev/loop5(0)",
                      "16777216", "3145728")));
    }
    SECTION("zero or odd stripe size") {
        CHECK(bad(one("0", "16777216", "striped", "2", "0", "/dev/loop4(0),/dev/loop5(0)")));
        CHECK(bad(one("0", "16777216", "striped", "2", "1000", "/dev/loop4(0),/dev/loop5(0)")));
        CHECK(bad(one("0", "16777216", "striped", "2", "3145728", "/dev/loop4(0),/dev/loop5(0)")));
    }
    SECTION("zero extent size") {
        CHECK(bad(one("0", "16777216", "linear", "1", "0", "/dev/loop4(0)", "16777216", "0")));
    }
    SECTION("extent offset overflows") {
        CHECK(bad(one("0", "16777216", "linear", "1", "0", "/dev/loop4(18446744073709551615)")));
    }
    SECTION("segment end overflows") {
        CHECK(bad(lvs_json({seg_row("data", "0", "18446744073709551615", "linear", "1", "0",
                                    "/dev/loop4(0)", "18446744073709551615")})));
    }
    SECTION("rows disagree on the LV size") {
        CHECK(bad(lvs_json({seg_row("data", "0", "4194304", "linear", "1", "0", "/dev/loop4(0)"),
                            seg_row("data", "4194304", "12582912", "linear", "1", "0",
                                    "/dev/loop5(0)", "33554432")})));
    }
    SECTION("pv without pe_start") {
        CHECK(bad(good_lvs(), R"({"report":[{"pv":[{"pv_name":"/dev/loop4"},
                                 {"pv_name":"/dev/loop5","pe_start":"0"}]}]})"));
    }
}

TEST_CASE("names LVM would not accept are refused before running anything",
          "[blkback][lvm][hostile]") {
    CHECK(lvm_resolve("vg0", "a b", {}).error() == Errc::invalid_argument);
    CHECK(lvm_resolve("-vg", "lv", {}).error() == Errc::invalid_argument);
    CHECK(lvm_resolve("", "lv", {}).error() == Errc::invalid_argument);
    CHECK(lvm_resolve("vg", "..", {}).error() == Errc::invalid_argument);
    CHECK(lvm_resolve("vg", "lv;rm", {}).error() == Errc::invalid_argument);
    CHECK(lvm_resolve("vg", "lv", LvmScan{{"/dev/loop0 --config x"}}).error() ==
          Errc::invalid_argument);
    CHECK(lvm_resolve("vg", "lv", LvmScan{{"relative/path"}}).error() == Errc::invalid_argument);
    CHECK(lvm_resolve("vg", "lv", LvmScan{{"/dev/a,/dev/b"}}).error() == Errc::invalid_argument);
}

}  // namespace
}  // namespace hv::blk::test
