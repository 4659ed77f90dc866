// TempDir: a private directory removed (recursively) when the test ends.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace hv::test {

class TempDir {
public:
    explicit TempDir(const char* prefix = "hvkit-test") {
        std::string tmpl = (std::filesystem::temp_directory_path() / prefix).string() + ".XXXXXX";
        char* p = ::mkdtemp(tmpl.data());
        if (p == nullptr) {
            std::abort();
        }
        path_ = p;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }
    std::string str() const { return path_.string(); }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

}  // namespace hv::test
