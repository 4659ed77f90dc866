// Regular-expression checks of program output (ECMAScript syntax, as std::regex).
//
// std::regex is compiled in text_match.cpp only: instantiating it costs ~8 s of compiler CPU in
// every translation unit that does, which a test file pays again for each build type. Tests
// include this header, never <regex>.
#pragma once

#include <string>
#include <vector>

namespace hv::test {

/// What a match captured: [0] the whole match, [i] group i ("" if it took no part). Empty when
/// nothing matched.
using Groups = std::vector<std::string>;

/// True if `pattern` matches somewhere in `text`; the match's groups go to `groups` if given.
/// A malformed pattern throws std::regex_error (as a test's bug, it fails that test).
bool re_search(const std::string& text, const std::string& pattern, Groups* groups = nullptr);

/// True if `pattern` matches the whole of `text`.
bool re_match(const std::string& text, const std::string& pattern, Groups* groups = nullptr);

}  // namespace hv::test
