// The one translation unit of the tests that instantiates std::regex (text_match.hpp).
#include "text_match.hpp"

#include <regex>

namespace hv::test {
namespace {

void keep(const std::smatch& m, Groups* groups) {
    if (groups == nullptr) {
        return;
    }
    groups->clear();
    if (m.empty()) {
        return;
    }
    for (const auto& g : m) {
        groups->push_back(g.str());
    }
}

}  // namespace

bool re_search(const std::string& text, const std::string& pattern, Groups* groups) {
    std::smatch m;
    const bool found = std::regex_search(text, m, std::regex(pattern));
    keep(m, groups);
    return found;
}

bool re_match(const std::string& text, const std::string& pattern, Groups* groups) {
    std::smatch m;
    const bool found = std::regex_match(text, m, std::regex(pattern));
    keep(m, groups);
    return found;
}

}  // namespace hv::test
