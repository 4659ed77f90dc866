// xl.cfg syntax (lexer + parser) and its interpretation into a DomainConfig.
// Layer: tools. No threads. Input is untrusted text: every path ends in a value or a
// ConfigError; nothing recurses on input (lists are flat), so depth is bounded.
#include "xlcfg.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "hv/unique_fd.hpp"

namespace hv::tools {

namespace {

class XlcfgCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "xlcfg"; }
    std::string message(int ev) const override {
        switch (static_cast<Errc>(ev)) {
            case Errc::syntax:
                return "syntax error";
            case Errc::unknown_key:
                return "unknown key";
            case Errc::duplicate_key:
                return "duplicate key";
            case Errc::bad_value:
                return "bad value";
            case Errc::missing_key:
                return "missing key";
            case Errc::bad_disk:
                return "bad disk spec";
            case Errc::bad_vif:
                return "bad vif spec";
            case Errc::bad_pci:
                return "bad pci spec";
            case Errc::io:
                return "cannot read file";
        }
        return "unknown xlcfg error";
    }
};

constexpr std::size_t max_file_bytes = 1u << 20;

std::string printable(char c) {
    const auto u = static_cast<unsigned char>(c);
    char buf[16];
    if (u >= 0x20 && u < 0x7f) {
        std::snprintf(buf, sizeof buf, "'%c'", c);
    } else {
        std::snprintf(buf, sizeof buf, "byte 0x%02x", u);
    }
    return buf;
}

// ------------------------------------------------------------------ lexer

enum class Tok {
    ident,
    string,
    number,
    assign,
    append,
    lbracket,
    rbracket,
    comma,
    semicolon,
    newline,
    end
};

struct Token {
    Tok kind = Tok::end;
    std::string text;
    unsigned line = 0;
};

const char* describe(Tok t) {
    switch (t) {
        case Tok::ident:
            return "a key";
        case Tok::string:
            return "a string";
        case Tok::number:
            return "a number";
        case Tok::assign:
            return "'='";
        case Tok::append:
            return "'+='";
        case Tok::lbracket:
            return "'['";
        case Tok::rbracket:
            return "']'";
        case Tok::comma:
            return "','";
        case Tok::semicolon:
            return "';'";
        case Tok::newline:
            return "end of line";
        case Tok::end:
            return "end of file";
    }
    return "?";
}

bool is_ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_ident_char(char c) {
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '.';
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

class Lexer {
public:
    Lexer(std::string_view text, std::string_view source) : s_(text), source_(source) {}

    CfgResult<Token> next() {
        for (;;) {
            if (i_ >= s_.size()) {
                return Token{Tok::end, {}, line_};
            }
            const char c = s_[i_];
            if (c == ' ' || c == '\t' || c == '\r') {
                ++i_;
            } else if (c == '#') {
                while (i_ < s_.size() && s_[i_] != '\n') {
                    ++i_;
                }
            } else {
                break;
            }
        }
        const char c = s_[i_];
        const unsigned line = line_;
        switch (c) {
            case '\n':
                ++i_;
                ++line_;
                return Token{Tok::newline, {}, line};
            case '=':
                ++i_;
                return Token{Tok::assign, {}, line};
            case '[':
                ++i_;
                return Token{Tok::lbracket, {}, line};
            case ']':
                ++i_;
                return Token{Tok::rbracket, {}, line};
            case ',':
                ++i_;
                return Token{Tok::comma, {}, line};
            case ';':
                ++i_;
                return Token{Tok::semicolon, {}, line};
            case '+':
                if (i_ + 1 < s_.size() && s_[i_ + 1] == '=') {
                    i_ += 2;
                    return Token{Tok::append, {}, line};
                }
                return error(line, "unexpected '+' (did you mean '+='?)");
            case '"':
            case '\'':
                return string_literal();
            default:
                break;
        }
        if (is_digit(c)) {
            const std::size_t start = i_;
            // Letters are kept so `0x1f` and typos like `12k` reach the number check whole.
            while (i_ < s_.size() && is_ident_char(s_[i_]) && s_[i_] != '.') {
                ++i_;
            }
            return Token{Tok::number, std::string(s_.substr(start, i_ - start)), line};
        }
        if (is_ident_start(c)) {
            const std::size_t start = i_;
            while (i_ < s_.size() && is_ident_char(s_[i_])) {
                ++i_;
            }
            return Token{Tok::ident, std::string(s_.substr(start, i_ - start)), line};
        }
        return error(line, "unexpected " + printable(c));
    }

    unexpected<ConfigError> error(unsigned line, std::string text) const {
        return unexpected(ConfigError{make_error_code(Errc::syntax), std::string(source_), line,
                                      std::move(text)});
    }

private:
    // Escapes as libxlutil: \" \' \\ \a \b \f \n \r \t \v, \xHH, \ooo (octal, 1-3 digits).
    CfgResult<Token> string_literal() {
        const char quote = s_[i_];
        const unsigned line = line_;
        ++i_;
        std::string out;
        for (;;) {
            if (i_ >= s_.size() || s_[i_] == '\n') {
                return error(line,
                             "unterminated string (missing closing " + std::string(1, quote) + ")");
            }
            const char c = s_[i_++];
            if (c == quote) {
                return Token{Tok::string, std::move(out), line};
            }
            if (c == '\0') {
                return error(line, "NUL byte inside a string");
            }
            if (c != '\\') {
                out.push_back(c);
                continue;
            }
            if (i_ >= s_.size() || s_[i_] == '\n') {
                return error(line, "unterminated string (backslash at end of line)");
            }
            const char e = s_[i_++];
            switch (e) {
                case '"':
                case '\'':
                case '\\':
                    out.push_back(e);
                    break;
                case 'a':
                    out.push_back('\a');
                    break;
                case 'b':
                    out.push_back('\b');
                    break;
                case 'f':
                    out.push_back('\f');
                    break;
                case 'n':
                    out.push_back('\n');
                    break;
                case 'r':
                    out.push_back('\r');
                    break;
                case 't':
                    out.push_back('\t');
                    break;
                case 'v':
                    out.push_back('\v');
                    break;
                case 'x': {
                    const int hi = i_ < s_.size() ? hex_value(s_[i_]) : -1;
                    const int lo = i_ + 1 < s_.size() ? hex_value(s_[i_ + 1]) : -1;
                    if (hi < 0 || lo < 0) {
                        return error(line, "\\x in a string needs two hex digits");
                    }
                    i_ += 2;
                    if (hi == 0 && lo == 0) {
                        return error(line, "\\x00 (NUL) is not allowed in a string");
                    }
                    out.push_back(static_cast<char>(hi * 16 + lo));
                    break;
                }
                default:
                    if (e >= '0' && e <= '7') {
                        unsigned v = static_cast<unsigned>(e - '0');
                        for (int k = 0; k < 2 && i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '7';
                             ++k) {
                            v = v * 8 + static_cast<unsigned>(s_[i_++] - '0');
                        }
                        if (v == 0 || v > 0xff) {
                            return error(line, "octal escape in a string must be \\001..\\377");
                        }
                        out.push_back(static_cast<char>(v));
                        break;
                    }
                    return error(line, "unknown escape \\" + std::string(1, e) + " in a string");
            }
        }
    }

    std::string_view s_;
    std::string_view source_;
    std::size_t i_ = 0;
    unsigned line_ = 1;
};

// ------------------------------------------------------------------ settings store

/// Keeps settings in order; `=` on an existing key is a duplicate unless replacing is
/// allowed (command-line overrides); `+=` concatenates as xl does.
class SettingStore {
public:
    CfgResult<void> add(CfgSetting s, bool append, bool may_replace) {
        auto it = index_.find(s.key);
        if (it == index_.end()) {
            index_.emplace(s.key, settings_.size());
            settings_.push_back(std::move(s));
            return {};
        }
        CfgSetting& old = settings_[it->second];
        if (!append) {
            if (!may_replace) {
                return unexpected(
                    ConfigError{make_error_code(Errc::duplicate_key), s.source, s.line,
                                "duplicate key '" + s.key + "' (first set on line " +
                                    std::to_string(old.line) + "; use += to extend it)"});
            }
            old = std::move(s);
            return {};
        }
        const bool old_list = old.value.kind == CfgValue::Kind::list;
        const bool new_list = s.value.kind == CfgValue::Kind::list;
        if (old_list != new_list) {
            return unexpected(
                ConfigError{make_error_code(Errc::syntax), s.source, s.line,
                            "cannot add a " + std::string(new_list ? "list" : "string") +
                                " to the " + (old_list ? "list" : "string") + " '" + s.key + "'"});
        }
        if (old_list) {
            for (auto& item : s.value.items) {
                old.value.items.push_back(std::move(item));
            }
        } else {
            old.value.text += s.value.text;
            old.value.kind = CfgValue::Kind::string;
        }
        return {};
    }
    std::vector<CfgSetting> take() { return std::move(settings_); }
    std::vector<CfgSetting>& settings() { return settings_; }

private:
    std::vector<CfgSetting> settings_;
    std::map<std::string, std::size_t> index_;
};

CfgResult<void> parse_into(SettingStore& store, std::string_view text, std::string_view source,
                           bool may_replace) {
    if (text.size() > max_file_bytes) {
        return unexpected(ConfigError{make_error_code(Errc::syntax), std::string(source), 0,
                                      "file is larger than 1 MiB"});
    }
    Lexer lex(text, source);
    for (;;) {
        auto t = lex.next();
        if (!t) {
            return unexpected(t.error());
        }
        if (t->kind == Tok::newline || t->kind == Tok::semicolon) {
            continue;
        }
        if (t->kind == Tok::end) {
            return {};
        }
        if (t->kind != Tok::ident) {
            return lex.error(t->line, std::string("expected a key, found ") + describe(t->kind));
        }
        CfgSetting setting;
        setting.key = std::move(t->text);
        setting.source = std::string(source);
        setting.line = t->line;

        auto op = lex.next();
        if (!op) {
            return unexpected(op.error());
        }
        if (op->kind != Tok::assign && op->kind != Tok::append) {
            return lex.error(
                op->line, "expected '=' after '" + setting.key + "', found " + describe(op->kind));
        }
        const bool append = op->kind == Tok::append;

        auto v = lex.next();
        if (!v) {
            return unexpected(v.error());
        }
        CfgValue& value = setting.value;
        value.line = v->line;
        if (v->kind == Tok::string || v->kind == Tok::number) {
            value.kind = v->kind == Tok::string ? CfgValue::Kind::string : CfgValue::Kind::number;
            value.text = std::move(v->text);
        } else if (v->kind == Tok::lbracket) {
            value.kind = CfgValue::Kind::list;
            const unsigned open_line = v->line;
            bool need_item = true;  // at start or after ','
            for (;;) {
                auto it = lex.next();
                if (!it) {
                    return unexpected(it.error());
                }
                if (it->kind == Tok::newline) {
                    continue;
                }
                if (it->kind == Tok::rbracket) {
                    break;  // `[]`, `[a]` and `[a,]` (trailing comma) all end here
                }
                if (it->kind == Tok::end) {
                    return lex.error(open_line,
                                     "unterminated list for '" + setting.key + "' (missing ']')");
                }
                if (need_item) {
                    if (it->kind == Tok::string || it->kind == Tok::number) {
                        value.items.push_back(
                            {std::move(it->text), it->kind == Tok::number, it->line});
                        need_item = false;
                        continue;
                    }
                    if (it->kind == Tok::lbracket) {
                        return lex.error(it->line, "nested lists are not supported");
                    }
                    return lex.error(
                        it->line, std::string("expected a list item, found ") + describe(it->kind));
                }
                if (it->kind == Tok::comma) {
                    need_item = true;
                    continue;
                }
                return lex.error(it->line, std::string("expected ',' or ']' in list, found ") +
                                               describe(it->kind));
            }
        } else {
            return lex.error(v->line, "missing value for '" + setting.key + "'");
        }

        auto e = lex.next();
        if (!e) {
            return unexpected(e.error());
        }
        if (e->kind != Tok::newline && e->kind != Tok::semicolon && e->kind != Tok::end) {
            return lex.error(e->line, "expected end of line after the value of '" + setting.key +
                                          "', found " + describe(e->kind));
        }
        HV_TRY(store.add(std::move(setting), append, may_replace));
        if (e->kind == Tok::end) {
            return {};
        }
    }
}

// ------------------------------------------------------------------ interpretation

ConfigError err(Errc code, const CfgSetting& s, unsigned line, std::string text) {
    return ConfigError{make_error_code(code), s.source, line, std::move(text)};
}

CfgResult<std::string> get_string(const CfgSetting& s) {
    if (s.value.kind == CfgValue::Kind::list) {
        return unexpected(
            err(Errc::bad_value, s, s.line, "'" + s.key + "' must be a string, not a list"));
    }
    return s.value.text;
}

/// Decimal, or 0x hex. A leading 0 before more digits is refused: xl would read it as octal.
bool parse_number(std::string_view t, std::uint64_t& out) {
    if (t.empty()) {
        return false;
    }
    std::uint64_t v = 0;
    if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
        for (char c : t.substr(2)) {
            const int h = hex_value(c);
            if (h < 0 || v > (UINT64_MAX >> 4)) {
                return false;
            }
            v = v * 16 + static_cast<unsigned>(h);
        }
        out = v;
        return true;
    }
    if (t.size() > 1 && t[0] == '0') {
        return false;
    }
    for (char c : t) {
        if (!is_digit(c)) {
            return false;
        }
        const auto d = static_cast<unsigned>(c - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    out = v;
    return true;
}

CfgResult<std::uint64_t> get_uint(const CfgSetting& s, std::uint64_t min, std::uint64_t max) {
    if (s.value.kind == CfgValue::Kind::list) {
        return unexpected(
            err(Errc::bad_value, s, s.line, "'" + s.key + "' must be an integer, not a list"));
    }
    std::uint64_t v = 0;
    if (!parse_number(s.value.text, v)) {
        return unexpected(
            err(Errc::bad_value, s, s.value.line,
                "'" + s.key + "' must be a decimal or 0x-hex integer, not '" + s.value.text + "'"));
    }
    if (v < min || v > max) {
        return unexpected(err(Errc::bad_value, s, s.value.line,
                              "'" + s.key + "' = " + s.value.text + " is out of range [" +
                                  std::to_string(min) + ", " + std::to_string(max) + "]"));
    }
    return v;
}

CfgResult<bool> get_bool(const CfgSetting& s) {
    auto v = get_uint(s, 0, 1);
    if (!v) {
        return unexpected(err(Errc::bad_value, s, s.value.line, "'" + s.key + "' must be 0 or 1"));
    }
    return *v == 1;
}

CfgResult<std::vector<CfgValue::Item>> get_list(const CfgSetting& s) {
    if (s.value.kind != CfgValue::Kind::list) {
        return unexpected(err(Errc::bad_value, s, s.line,
                              "'" + s.key + "' must be a list: " + s.key + " = [ '...', ... ]"));
    }
    return s.value.items;
}

std::string quoted_item(const std::string& t) {
    return "'" + t + "'";
}

/// Error text may quote hostile bytes; show control characters as \xNN.
std::string escape_controls(const std::string& t) {
    std::string out;
    for (char c : t) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", u);
            out += buf;
        } else {
            out.push_back(c);
        }
    }
    return out;
}

}  // namespace

const std::error_category& xlcfg_category() noexcept {
    static const XlcfgCategory cat;
    return cat;
}

std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), xlcfg_category()};
}

std::string ConfigError::message() const {
    if (line == 0) {
        return escape_controls(source + ": " + text);
    }
    return escape_controls(source + ":" + std::to_string(line) + ": " + text);
}

bool parse_action(std::string_view t, ActionOnShutdown& out) {
    static constexpr std::pair<std::string_view, ActionOnShutdown> table[] = {
        {"destroy", ActionOnShutdown::destroy},
        {"restart", ActionOnShutdown::restart},
        {"rename-restart", ActionOnShutdown::rename_restart},
        {"preserve", ActionOnShutdown::preserve},
        {"coredump-destroy", ActionOnShutdown::coredump_destroy},
        {"coredump-restart", ActionOnShutdown::coredump_restart},
        {"soft-reset", ActionOnShutdown::soft_reset},
    };
    for (const auto& [name, a] : table) {
        if (t == name) {
            out = a;
            return true;
        }
    }
    return false;
}

const char* to_string(ActionOnShutdown a) noexcept {
    switch (a) {
        case ActionOnShutdown::destroy:
            return "destroy";
        case ActionOnShutdown::restart:
            return "restart";
        case ActionOnShutdown::rename_restart:
            return "rename-restart";
        case ActionOnShutdown::preserve:
            return "preserve";
        case ActionOnShutdown::coredump_destroy:
            return "coredump-destroy";
        case ActionOnShutdown::coredump_restart:
            return "coredump-restart";
        case ActionOnShutdown::soft_reset:
            return "soft-reset";
    }
    return "?";
}

bool valid_domain_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > 64 || name == "Domain-0") {
        return false;
    }
    bool all_digits = true;
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
                        c == '_' || c == '-' || c == '.';
        if (!ok) {
            return false;
        }
        all_digits = all_digits && is_digit(c);
    }
    return !all_digits;
}

CfgResult<std::vector<CfgSetting>> parse_cfg_syntax(std::string_view text,
                                                    std::string_view source) {
    SettingStore store;
    HV_TRY(parse_into(store, text, source, false));
    return store.take();
}

CfgResult<DomainConfig> parse_domain_config(std::string_view text, std::string_view source,
                                            std::span<const std::string> overrides) {
    SettingStore store;
    HV_TRY(parse_into(store, text, source, false));
    for (std::size_t i = 0; i < overrides.size(); ++i) {
        const std::string& o = overrides[i];
        if (o.find('=') == std::string::npos) {
            return unexpected(ConfigError{make_error_code(Errc::syntax), "<command line>",
                                          static_cast<unsigned>(i + 1),
                                          "'" + o + "' is not KEY=VALUE"});
        }
        if (o.find('\n') != std::string::npos) {
            return unexpected(ConfigError{make_error_code(Errc::syntax), "<command line>",
                                          static_cast<unsigned>(i + 1),
                                          "a KEY=VALUE argument cannot contain a newline"});
        }
        // Each argument is one line of its own "file"; report its position as the line.
        SettingStore one;
        auto r = parse_into(one, o, "<command line>", false);
        if (!r) {
            ConfigError e = r.error();
            e.line = static_cast<unsigned>(i + 1);
            return unexpected(e);
        }
        for (auto& s : one.settings()) {
            s.line = static_cast<unsigned>(i + 1);
            s.value.line = s.line;
            for (auto& item : s.value.items) {
                item.line = s.line;
            }
            HV_TRY(store.add(std::move(s), false, true));
        }
    }

    DomainConfig cfg;
    const CfgSetting* name = nullptr;
    const CfgSetting* memory = nullptr;
    const CfgSetting* maxmem = nullptr;
    const CfgSetting* kernel = nullptr;
    const CfgSetting* cmdline = nullptr;
    const CfgSetting* extra = nullptr;
    const CfgSetting* root = nullptr;
    const std::vector<CfgSetting>& settings = store.settings();
    const std::string main_source(source);

    for (const CfgSetting& s : settings) {
        const std::string& k = s.key;
        if (k == "name") {
            name = &s;
            auto v = get_string(s);
            if (!v) {
                return unexpected(v.error());
            }
            if (!valid_domain_name(*v)) {
                return unexpected(err(Errc::bad_value, s, s.value.line,
                                      "invalid domain name '" + *v +
                                          "': use 1-64 of [A-Za-z0-9_.-], not all digits, "
                                          "not Domain-0"));
            }
            cfg.name = *v;
        } else if (k == "type") {
            auto v = get_string(s);
            if (!v) {
                return unexpected(v.error());
            }
            if (*v != "pv") {
                return unexpected(err(Errc::bad_value, s, s.value.line,
                                      "type '" + *v +
                                          "' is not supported: domains here are "
                                          "processes, type = \"pv\""));
            }
        } else if (k == "memory") {
            memory = &s;
            auto v = get_uint(s, 1, 1u << 20);
            if (!v) {
                return unexpected(v.error());
            }
            cfg.memory_mib = *v;
        } else if (k == "maxmem") {
            maxmem = &s;
            auto v = get_uint(s, 1, 1u << 20);
            if (!v) {
                return unexpected(v.error());
            }
            cfg.maxmem_mib = *v;
        } else if (k == "vcpus") {
            auto v = get_uint(s, 1, 128);
            if (!v) {
                return unexpected(v.error());
            }
            cfg.vcpus = static_cast<std::uint32_t>(*v);
        } else if (k == "kernel") {
            kernel = &s;
            auto v = get_string(s);
            if (!v) {
                return unexpected(v.error());
            }
            if (v->empty()) {
                return unexpected(err(Errc::bad_value, s, s.value.line, "'kernel' is empty"));
            }
            cfg.kernel = *v;
        } else if (k == "cmdline" || k == "extra" || k == "root") {
            auto v = get_string(s);
            if (!v) {
                return unexpected(v.error());
            }
            (k == "cmdline" ? cmdline : k == "extra" ? extra : root) = &s;
        } else if (k == "disk") {
            auto items = get_list(s);
            if (!items) {
                return unexpected(items.error());
            }
            for (const auto& item : *items) {
                auto d = parse_disk_spec(item.text);
                if (!d) {
                    return unexpected(
                        err(Errc::bad_disk, s, item.line,
                            "disk " + quoted_item(item.text) + ": " + d.error().text));
                }
                for (const DiskSpec& other : cfg.disks) {
                    if (other.virtual_device == d->virtual_device) {
                        return unexpected(err(Errc::bad_disk, s, item.line,
                                              "disk " + quoted_item(item.text) + ": vdev " +
                                                  d->vdev + " is already used by disk vdev " +
                                                  other.vdev));
                    }
                }
                cfg.disks.push_back(std::move(*d));
            }
        } else if (k == "vif") {
            auto items = get_list(s);
            if (!items) {
                return unexpected(items.error());
            }
            for (const auto& item : *items) {
                auto v = parse_vif_spec(item.text);
                if (!v) {
                    return unexpected(err(Errc::bad_vif, s, item.line,
                                          "vif " + quoted_item(item.text) + ": " + v.error().text));
                }
                if (!v->devid) {
                    v->devid = static_cast<std::uint32_t>(cfg.vifs.size());
                }
                for (const VifSpec& other : cfg.vifs) {
                    if (other.devid == v->devid) {
                        return unexpected(err(Errc::bad_vif, s, item.line,
                                              "vif " + quoted_item(item.text) + ": devid " +
                                                  std::to_string(*v->devid) + " is already used"));
                    }
                }
                cfg.vifs.push_back(std::move(*v));
            }
        } else if (k == "pci") {
            auto items = get_list(s);
            if (!items) {
                return unexpected(items.error());
            }
            for (const auto& item : *items) {
                auto p = parse_pci_spec(item.text);
                if (!p) {
                    return unexpected(err(Errc::bad_pci, s, item.line,
                                          "pci " + quoted_item(item.text) + ": " + p.error().text));
                }
                for (const PciSpec& other : cfg.pcis) {
                    if (other.bdf() == p->bdf()) {
                        return unexpected(err(Errc::bad_pci, s, item.line,
                                              "pci " + quoted_item(item.text) + ": device " +
                                                  p->bdf() + " is listed twice"));
                    }
                }
                cfg.pcis.push_back(std::move(*p));
            }
        } else if (k == "driver_domain") {
            auto v = get_bool(s);
            if (!v) {
                return unexpected(v.error());
            }
            cfg.driver_domain = *v;
        } else if (k == "trusted") {
            auto v = get_bool(s);
            if (!v) {
                return unexpected(v.error());
            }
            cfg.trusted = *v;
        } else if (k == "on_poweroff" || k == "on_reboot" || k == "on_crash") {
            auto v = get_string(s);
            if (!v) {
                return unexpected(v.error());
            }
            ActionOnShutdown a{};
            if (!parse_action(*v, a)) {
                return unexpected(err(Errc::bad_value, s, s.value.line,
                                      "'" + k + "' = '" + *v +
                                          "': use destroy, restart, rename-restart, preserve, "
                                          "coredump-destroy, coredump-restart or soft-reset"));
            }
            (k == "on_poweroff" ? cfg.on_poweroff
             : k == "on_reboot" ? cfg.on_reboot
                                : cfg.on_crash) = a;
        } else {
            return unexpected(err(Errc::unknown_key, s, s.line, "unknown key '" + k + "'"));
        }
    }

    auto missing = [&](const char* key) {
        return unexpected(ConfigError{make_error_code(Errc::missing_key), main_source, 0,
                                      std::string("missing required key '") + key + "'"});
    };
    if (name == nullptr) {
        return missing("name");
    }
    if (memory == nullptr) {
        return missing("memory");
    }
    if (kernel == nullptr) {
        return missing("kernel");
    }
    if (maxmem == nullptr) {
        cfg.maxmem_mib = cfg.memory_mib;
    } else if (cfg.maxmem_mib < cfg.memory_mib) {
        return unexpected(err(Errc::bad_value, *maxmem, maxmem->value.line,
                              "maxmem (" + std::to_string(cfg.maxmem_mib) +
                                  ") is less than memory (" + std::to_string(cfg.memory_mib) +
                                  ")"));
    }
    // As xl: cmdline wins; otherwise "root=<root> <extra>".
    if (cmdline != nullptr) {
        cfg.cmdline = cmdline->value.text;
        for (const CfgSetting* ignored : {root, extra}) {
            if (ignored != nullptr) {
                cfg.warnings.push_back(ignored->source + ":" + std::to_string(ignored->line) +
                                       ": ignoring '" + ignored->key +
                                       "' because 'cmdline' is set");
            }
        }
    } else {
        if (root != nullptr) {
            cfg.cmdline = "root=" + root->value.text;
        }
        if (extra != nullptr) {
            if (!cfg.cmdline.empty()) {
                cfg.cmdline += ' ';
            }
            cfg.cmdline += extra->value.text;
        }
    }
    return cfg;
}

CfgResult<DomainConfig> parse_domain_file(const std::string& path,
                                          std::span<const std::string> overrides) {
    auto io_error = [&](std::string text) {
        return unexpected(ConfigError{make_error_code(Errc::io), path, 0, std::move(text)});
    };
    hv::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        return io_error(std::error_code(errno, std::system_category()).message());
    }
    std::string text;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return io_error(std::error_code(errno, std::system_category()).message());
        }
        if (n == 0) {
            break;
        }
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > max_file_bytes) {
            return io_error("file is larger than 1 MiB");
        }
    }
    return parse_domain_config(text, path, overrides);
}

}  // namespace hv::tools
