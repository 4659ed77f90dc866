// LVM lookup through liblvm2cmd and the LV → PV mapping. Layer: L3 control path.
// liblvm2cmd keeps global state (log callback, lvmcache, umask): every use holds lvm_mutex.
#include "blkback/lvm.hpp"

#include <lvm2cmd.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "blkback/engine_uring.hpp"
#include "hv/log.hpp"

namespace hv::blk {

namespace {

// ---- a small JSON reader: enough for LVM's report format (objects, arrays, strings) ---------

struct Json {
    enum class Kind { null, string, number, boolean, array, object } kind = Kind::null;
    std::string text;  // string value, or the number's spelling
    std::vector<Json> items;           // array elements, or object member values
    std::vector<std::string> keys;     // object member names, parallel to items

    const Json* get(std::string_view key) const noexcept {
        if (kind != Kind::object) {
            return nullptr;
        }
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if (keys[i] == key) {
                return &items[i];
            }
        }
        return nullptr;
    }
};

class JsonReader {
public:
    explicit JsonReader(std::string_view s) noexcept : s_(s) {}
    std::optional<Json> document() {
        Json v;
        if (!value(v, 0)) {
            return std::nullopt;
        }
        skip_ws();
        if (pos_ != s_.size()) {
            return std::nullopt;
        }
        return v;
    }

private:
    static constexpr int max_depth = 16;

    void skip_ws() noexcept {
        while (pos_ < s_.size() &&
               (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r')) {
            ++pos_;
        }
    }
    bool eat(char c) noexcept {
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    bool string(std::string& out) {
        if (!eat('"')) {
            return false;
        }
        while (pos_ < s_.size()) {
            const char c = s_[pos_++];
            if (c == '"') {
                return true;
            }
            if (static_cast<unsigned char>(c) < 0x20) {
                return false;
            }
            if (c != '\\') {
                out.push_back(c);
                continue;
            }
            if (pos_ >= s_.size()) {
                return false;
            }
            const char e = s_[pos_++];
            switch (e) {
            case '"': case '\\': case '/': out.push_back(e); break;
            case 'n': out.push_back('\n'); break;
            case 't': out.push_back('\t'); break;
            case 'r': out.push_back('\r'); break;
            case 'b': out.push_back('\b'); break;
            case 'f': out.push_back('\f'); break;
            default: return false;  // \u is never produced for the names we read
            }
        }
        return false;
    }
    bool literal(std::string_view word) noexcept {
        if (s_.substr(pos_, word.size()) == word) {
            pos_ += word.size();
            return true;
        }
        return false;
    }
    bool value(Json& v, int depth) {
        if (depth > max_depth) {
            return false;
        }
        skip_ws();
        if (pos_ >= s_.size()) {
            return false;
        }
        const char c = s_[pos_];
        if (c == '"') {
            v.kind = Json::Kind::string;
            return string(v.text);
        }
        if (c == '{') {
            ++pos_;
            v.kind = Json::Kind::object;
            if (eat('}')) {
                return true;
            }
            do {
                std::string key;
                Json member;
                if (!string(key) || !eat(':') || !value(member, depth + 1)) {
                    return false;
                }
                v.keys.push_back(std::move(key));
                v.items.push_back(std::move(member));
            } while (eat(','));
            return eat('}');
        }
        if (c == '[') {
            ++pos_;
            v.kind = Json::Kind::array;
            if (eat(']')) {
                return true;
            }
            do {
                Json item;
                if (!value(item, depth + 1)) {
                    return false;
                }
                v.items.push_back(std::move(item));
            } while (eat(','));
            return eat(']');
        }
        if (literal("true") || literal("false")) {
            v.kind = Json::Kind::boolean;
            return true;
        }
        if (literal("null")) {
            return true;
        }
        const std::size_t start = pos_;
        while (pos_ < s_.size() && (std::strchr("+-.eE", s_[pos_]) != nullptr ||
                                    (s_[pos_] >= '0' && s_[pos_] <= '9'))) {
            ++pos_;
        }
        if (pos_ == start) {
            return false;
        }
        v.kind = Json::Kind::number;
        v.text = std::string(s_.substr(start, pos_ - start));
        return true;
    }

    std::string_view s_;
    std::size_t pos_ = 0;
};

/// The rows of report[0].<kind>: LVM's JSON shape is {"report": [{"lv": [{...}, ...]}]}.
const std::vector<Json>* report_rows(const Json& doc, std::string_view kind) noexcept {
    const Json* report = doc.get("report");
    if (report == nullptr || report->kind != Json::Kind::array || report->items.size() != 1) {
        return nullptr;
    }
    const Json* rows = report->items[0].get(kind);
    if (rows == nullptr || rows->kind != Json::Kind::array) {
        return nullptr;
    }
    return &rows->items;
}

const std::string* field(const Json& row, std::string_view key) noexcept {
    const Json* v = row.get(key);
    return v != nullptr && v->kind == Json::Kind::string ? &v->text : nullptr;
}

std::optional<std::uint64_t> to_u64(std::string_view s) noexcept {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

std::optional<std::uint64_t> u64_field(const Json& row, std::string_view key) noexcept {
    const std::string* s = field(row, key);
    return s == nullptr ? std::nullopt : to_u64(*s);
}

/// "pv(start)[,pv(start)...]" → areas. PV paths never contain ')' (we also reject it).
std::optional<std::vector<LvmArea>> parse_devices(std::string_view s) {
    std::vector<LvmArea> out;
    std::size_t pos = 0;
    while (pos < s.size()) {
        const std::size_t close = s.find(')', pos);
        if (close == std::string_view::npos) {
            return std::nullopt;
        }
        const std::string_view item = s.substr(pos, close - pos);
        const std::size_t open = item.rfind('(');
        if (open == std::string_view::npos || open == 0) {
            return std::nullopt;
        }
        const auto start = to_u64(item.substr(open + 1));
        if (!start) {
            return std::nullopt;
        }
        LvmArea a;
        a.pv_path = std::string(item.substr(0, open));
        a.start_extent = *start;
        out.push_back(std::move(a));
        pos = close + 1;
        if (pos < s.size()) {
            if (s[pos] != ',') {
                return std::nullopt;
            }
            ++pos;
            if (pos == s.size()) {
                return std::nullopt;
            }
        }
    }
    if (out.empty()) {
        return std::nullopt;
    }
    return out;
}

bool mul_ok(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
    return !__builtin_mul_overflow(a, b, &out);
}
bool add_ok(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
    return !__builtin_add_overflow(a, b, &out);
}

// LVM names: [a-zA-Z0-9+_.-], not starting with '-' (lvm(8) "VALID NAMES").
bool valid_lvm_name(std::string_view n) noexcept {
    if (n.empty() || n.size() > 127 || n[0] == '-' || n == "." || n == "..") {
        return false;
    }
    return std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '+' || c == '_' || c == '.' || c == '-';
    });
}

// Device paths travel on a whitespace-split command line and in a comma list.
bool valid_device_path(std::string_view p) noexcept {
    if (p.empty() || p[0] != '/' || p.size() > 255) {
        return false;
    }
    return std::all_of(p.begin(), p.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '/' || c == '_' || c == '.' || c == '-' || c == '+' || c == ':';
    });
}

// ---- liblvm2cmd -------------------------------------------------------------------------

std::mutex lvm_mutex;
std::string* lvm_report_sink = nullptr;  // guarded by lvm_mutex
std::string* lvm_error_sink = nullptr;   // guarded by lvm_mutex

extern "C" void lvm_log_capture(int level, const char* file, int, int, const char* message) {
    if (message == nullptr) {
        return;
    }
    // Report lines are printed by libdm's report writer at LVM2_LOG_PRINT; warnings share that
    // level, so the source file tells them apart.
    if (level == LVM2_LOG_PRINT && file != nullptr && std::strstr(file, "libdm-report.c") &&
        lvm_report_sink != nullptr) {
        lvm_report_sink->append(message);
        lvm_report_sink->push_back('\n');
    } else if (level <= LVM2_LOG_ERROR && lvm_error_sink != nullptr) {
        lvm_error_sink->append(message);
        lvm_error_sink->push_back('\n');
    }
}


/// lvm2_init/lvm2_exit and the process umask LVM changes (to 0077) while it runs.
class LvmSession {
public:
    LvmSession() noexcept : umask_(::umask(0077)) {
        ::lvm2_log_fn(lvm_log_capture);
        handle_ = ::lvm2_init();
        if (handle_ != nullptr) {
            ::lvm2_log_level(handle_, LVM2_LOG_PRINT);
            ::lvm2_disable_dmeventd_monitoring(handle_);
        }
    }
    ~LvmSession() {
        if (handle_ != nullptr) {
            ::lvm2_exit(handle_);
        }
        ::umask(umask_);
    }
    LvmSession(const LvmSession&) = delete;
    LvmSession& operator=(const LvmSession&) = delete;
    void* handle() const noexcept { return handle_; }

private:
    mode_t umask_;
    void* handle_ = nullptr;
};

struct LvmRun {
    int rc;
    std::string report;
    std::string errors;
};

/// One lvm command in-process, in a session of its own: liblvm2cmd 2.03.16 crashes when a
/// second reporting command runs on the same handle. It runs on a short-lived thread because
/// lvm's toolcontext, on the main thread only, fcloses and reopens stdin/stdout (to set its
/// own buffering), which leaves std::cout writing to a dead FILE.
LvmRun run_lvm(const std::string& cmdline) noexcept {
    LvmRun r{LVM2_INIT_FAILED, {}, {}};
    const std::lock_guard lock(lvm_mutex);
    auto body = [&r, &cmdline] {
        LvmSession session;
        if (session.handle() == nullptr) {
            r.errors = "lvm2_init failed";
            return;
        }
        lvm_report_sink = &r.report;
        lvm_error_sink = &r.errors;
        r.rc = ::lvm2_run(session.handle(), cmdline.c_str());
        lvm_report_sink = nullptr;
        lvm_error_sink = nullptr;
    };
    try {
        std::thread(body).join();
    } catch (const std::system_error& e) {  // thread creation failed
        r.rc = LVM2_INIT_FAILED;
        r.errors = e.what();
    }
    return r;
}

}  // namespace

hv::Result<LvmVolume> lvm_parse_reports(std::string_view vg, std::string_view lv,
                                        std::string_view lvs_json,
                                        std::string_view pvs_json) noexcept {
    // Allocation failure terminates (style.md §5); nothing here throws otherwise.
    auto lvs_doc = JsonReader(lvs_json).document();
    auto pvs_doc = JsonReader(pvs_json).document();
    if (!lvs_doc || !pvs_doc) {
        return hv::fail(Errc::lvm_report);
    }
    // `lvs --segments` names its rows "seg"; without --segments they are "lv".
    const std::vector<Json>* seg_rows = report_rows(*lvs_doc, "seg");
    if (seg_rows == nullptr) {
        seg_rows = report_rows(*lvs_doc, "lv");
    }
    const std::vector<Json>* pv_rows = report_rows(*pvs_doc, "pv");
    if (seg_rows == nullptr || pv_rows == nullptr) {
        return hv::fail(Errc::lvm_report);
    }
    LvmVolume vol;
    vol.vg = std::string(vg);
    vol.lv = std::string(lv);
    bool first = true;
    for (const Json& row : *seg_rows) {
        const std::string* name = field(row, "lv_name");
        const std::string* vg_name = field(row, "vg_name");
        if (name == nullptr || vg_name == nullptr) {
            return hv::fail(Errc::lvm_report);
        }
        if (*name != lv || *vg_name != vg) {
            continue;  // a report may carry other LVs; only ours counts
        }
        const auto lv_size = u64_field(row, "lv_size");
        const auto extent = u64_field(row, "vg_extent_size");
        const auto start = u64_field(row, "seg_start");
        const auto size = u64_field(row, "seg_size");
        const auto stripes = u64_field(row, "stripes");
        const auto stripe_size = u64_field(row, "stripe_size");
        const std::string* type = field(row, "segtype");
        const std::string* devices = field(row, "devices");
        if (!lv_size || !extent || !start || !size || !stripes || !stripe_size || type == nullptr ||
            devices == nullptr || *extent == 0 || *extent % 512 != 0) {
            return hv::fail(Errc::lvm_report);
        }
        if (first) {
            vol.size_bytes = *lv_size;
            vol.extent_size_bytes = *extent;
            first = false;
        } else if (vol.size_bytes != *lv_size || vol.extent_size_bytes != *extent) {
            return hv::fail(Errc::lvm_report);
        }
        if (*type != "linear" && *type != "striped") {
            HV_ERROR("blkback: %.*s/%.*s has a %s segment; only linear and striped are served",
                     static_cast<int>(vg.size()), vg.data(), static_cast<int>(lv.size()),
                     lv.data(), type->c_str());
            return hv::fail(Errc::lvm_unsupported);
        }
        auto areas = parse_devices(*devices);
        if (!areas || areas->size() != *stripes) {
            return hv::fail(Errc::lvm_report);
        }
        LvmSegment seg;
        seg.start_bytes = *start;
        seg.size_bytes = *size;
        seg.striped = *stripes > 1;
        seg.stripe_size_bytes = seg.striped ? *stripe_size : 0;
        if (seg.striped && (seg.stripe_size_bytes == 0 || seg.stripe_size_bytes % 512 != 0)) {
            return hv::fail(Errc::lvm_report);
        }
        seg.areas = std::move(*areas);
        vol.segments.push_back(std::move(seg));
    }
    if (vol.segments.empty()) {
        return hv::fail(Errc::lvm_not_found);
    }
    std::sort(vol.segments.begin(), vol.segments.end(),
              [](const LvmSegment& a, const LvmSegment& b) { return a.start_bytes < b.start_bytes; });
    std::uint64_t pos = 0;
    for (LvmSegment& seg : vol.segments) {
        std::uint64_t end = 0;
        if (seg.start_bytes != pos || seg.size_bytes == 0 || !add_ok(pos, seg.size_bytes, end) ||
            seg.size_bytes % (vol.extent_size_bytes * seg.areas.size()) != 0) {
            return hv::fail(Errc::lvm_report);
        }
        if (seg.striped && (seg.size_bytes / seg.areas.size()) % seg.stripe_size_bytes != 0) {
            return hv::fail(Errc::lvm_report);
        }
        pos = end;
        for (LvmArea& a : seg.areas) {
            // A PV LVM did not see is reported as "[unknown]", and pvs lists it under that
            // name too: only real device paths count.
            if (a.pv_path.empty() || a.pv_path[0] != '/') {
                HV_ERROR("blkback: a PV of %s/%s is missing (%s)", vol.vg.c_str(), vol.lv.c_str(),
                         a.pv_path.c_str());
                return hv::fail(Errc::lvm_not_found);
            }
            const Json* pv = nullptr;
            for (const Json& row : *pv_rows) {
                const std::string* pv_name = field(row, "pv_name");
                if (pv_name != nullptr && *pv_name == a.pv_path) {
                    pv = &row;
                    break;
                }
            }
            if (pv == nullptr) {
                HV_ERROR("blkback: PV %s of %s/%s was not scanned", a.pv_path.c_str(),
                         vol.vg.c_str(), vol.lv.c_str());
                return hv::fail(Errc::lvm_not_found);
            }
            const auto pe_start = u64_field(*pv, "pe_start");
            std::uint64_t ext_off = 0;
            if (!pe_start || !mul_ok(a.start_extent, vol.extent_size_bytes, ext_off) ||
                !add_ok(*pe_start, ext_off, a.pv_offset_bytes)) {
                return hv::fail(Errc::lvm_report);
            }
            a.pe_start_bytes = *pe_start;
        }
    }
    if (pos != vol.size_bytes) {
        return hv::fail(Errc::lvm_report);
    }
    return vol;
}

hv::Result<LvmVolume> lvm_resolve(std::string_view vg, std::string_view lv,
                                  const LvmScan& scan) noexcept {
    if (!valid_lvm_name(vg) || !valid_lvm_name(lv)) {
        return hv::fail(Errc::invalid_argument);
    }
    std::string devices;
    if (scan.devices.empty()) {
        HV_INFO("blkback: resolving %.*s/%.*s with LVM scanning every device",
                static_cast<int>(vg.size()), vg.data(), static_cast<int>(lv.size()), lv.data());
    }
    for (const std::string& d : scan.devices) {
        if (!valid_device_path(d)) {
            return hv::fail(Errc::invalid_argument);
        }
        devices += devices.empty() ? " --devices " : ",";
        devices += d;
    }
    const std::string target = std::string(vg) + "/" + std::string(lv);
    const std::string lvs = "lvs" + devices +
                            " --reportformat json --units b --nosuffix --segments"
                            " -o lv_name,vg_name,lv_size,vg_extent_size,seg_start,seg_size,"
                            "segtype,stripes,stripe_size,devices " + target;
    const std::string pvs = "pvs" + devices +
                            " --reportformat json --units b --nosuffix -o pv_name,pe_start"
                            " -S vg_name=" + std::string(vg);
    LvmRun lvs_run = run_lvm(lvs);
    LvmRun pvs_run{LVM2_COMMAND_SUCCEEDED, {}, {}};
    if (lvs_run.rc == LVM2_COMMAND_SUCCEEDED) {
        pvs_run = run_lvm(pvs);
    }
    if (lvs_run.rc != LVM2_COMMAND_SUCCEEDED) {
        HV_ERROR("blkback: lvs %s failed (%d): %s", target.c_str(), lvs_run.rc,
                 lvs_run.errors.c_str());
        if (lvs_run.errors.find("not found") != std::string::npos ||
            lvs_run.errors.find("Failed to find") != std::string::npos) {
            return hv::fail(Errc::lvm_not_found);
        }
        return hv::fail(Errc::lvm_command);
    }
    if (pvs_run.rc != LVM2_COMMAND_SUCCEEDED) {
        HV_ERROR("blkback: pvs for %.*s failed (%d): %s", static_cast<int>(vg.size()), vg.data(),
                 pvs_run.rc, pvs_run.errors.c_str());
        return hv::fail(Errc::lvm_command);
    }
    return lvm_parse_reports(vg, lv, lvs_run.report, pvs_run.report);
}

hv::Result<std::unique_ptr<BlockEngine>> make_lvm_engine(const LvmVolume& vol,
                                                         const UringEngineOptions& opt) noexcept {
    detail::UringLayout layout;
    auto device_index = [&](const std::string& path) {
        auto it = std::find(layout.devices.begin(), layout.devices.end(), path);
        if (it == layout.devices.end()) {
            layout.devices.push_back(path);
            return static_cast<std::uint32_t>(layout.devices.size() - 1);
        }
        return static_cast<std::uint32_t>(it - layout.devices.begin());
    };
    for (const LvmSegment& s : vol.segments) {
        detail::UringSegment seg;
        seg.start_bytes = s.start_bytes;
        seg.size_bytes = s.size_bytes;
        seg.chunk_bytes = s.striped ? s.stripe_size_bytes : 0;
        for (const LvmArea& a : s.areas) {
            seg.areas.push_back(detail::UringArea{device_index(a.pv_path), a.pv_offset_bytes});
        }
        layout.segments.push_back(std::move(seg));
    }
    layout.capacity_bytes = vol.size_bytes;
    HV_INFO("blkback: serving %s/%s (%llu bytes, %zu segments) directly on %zu PVs",
            vol.vg.c_str(), vol.lv.c_str(), static_cast<unsigned long long>(vol.size_bytes),
            vol.segments.size(), layout.devices.size());
    return detail::make_uring_layout_engine(std::move(layout), opt);
}

hv::Result<std::unique_ptr<BlockEngine>> open_lvm_volume(std::string_view vg, std::string_view lv,
                                                         const LvmScan& scan,
                                                         const UringEngineOptions& opt) noexcept {
    auto vol = lvm_resolve(vg, lv, scan);
    if (!vol) {
        return hv::unexpected(vol.error());
    }
    struct stat st {};
    const std::string dev = vol->dev_path();
    if (::stat(dev.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
        return make_uring_engine(dev, opt);  // device-mapper made the LV: use it
    }
    return make_lvm_engine(*vol, opt);
}

}  // namespace hv::blk
