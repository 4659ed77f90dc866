// I/O memory grants: reopening with the granted access, and the /proc scan that verifies a
// revocation (see iomem.hpp). Layer: hv-min (L1). hv-min's loop thread only.
#include "iomem.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace hv::hvmin::iomem {

Result<UniqueFd> reopen(int fd, bool readonly) {
    const int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0) {
        return fail_errno();
    }
    const int acc = fl & O_ACCMODE;
    if ((readonly && acc == O_WRONLY) || (!readonly && acc != O_RDWR)) {
        return fail_errno(EACCES);  // never more access than the granter itself has
    }
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    UniqueFd out(::open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!out) {
        return fail_errno();
    }
    return out;
}

Result<FileId> file_id(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        return fail_errno();
    }
    return FileId{st.st_dev, st.st_ino};
}

std::vector<pid_t> parse_pids(std::string_view text) {
    std::vector<pid_t> out;
    while (!text.empty()) {
        const auto nl = text.find('\n');
        const std::string_view line = text.substr(0, nl);
        pid_t p = 0;
        const auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), p);
        if (ec == std::errc() && end == line.data() + line.size() && p > 0) {
            out.push_back(p);
        }
        if (nl == std::string_view::npos) {
            break;
        }
        text.remove_prefix(nl + 1);
    }
    return out;
}

bool maps_refer(std::string_view maps, FileId id) {
    // "start-end perms offset major:minor inode [path]", dev in hex, inode in decimal.
    std::istringstream in{std::string(maps)};
    std::string line;
    while (std::getline(in, line)) {
        unsigned maj = 0;
        unsigned min = 0;
        unsigned long long ino = 0;
        if (std::sscanf(line.c_str(), "%*s %*s %*s %x:%x %llu", &maj, &min, &ino) == 3 &&
            ino != 0 && ino == id.ino && maj == major(id.dev) && min == minor(id.dev)) {
            return true;
        }
    }
    return false;
}

namespace {

bool fds_refer(pid_t pid, FileId id) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return false;  // gone
    }
    bool found = false;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') {
            continue;
        }
        struct stat st {};
        if (::fstatat(::dirfd(d), e->d_name, &st, 0) == 0 && st.st_ino == id.ino &&
            st.st_dev == id.dev) {
            found = true;
            break;
        }
    }
    ::closedir(d);
    return found;
}

}  // namespace

bool referenced(std::span<const pid_t> pids, FileId id, pid_t* who) {
    for (const pid_t p : pids) {
        std::ifstream f("/proc/" + std::to_string(p) + "/maps");
        std::stringstream ss;
        ss << f.rdbuf();
        if (fds_refer(p, id) || maps_refer(ss.str(), id)) {
            if (who != nullptr) {
                *who = p;
            }
            return true;
        }
    }
    return false;
}

Result<std::uint32_t> Table::add(Grant g) {
    // Dom0's processes (the toolstack's backends) are counted per connection.
    const auto mine = static_cast<std::size_t>(
        std::count_if(grants_.begin(), grants_.end(), [&g](const auto& kv) {
            return g.granter == 0 ? kv.second.granter_conn == g.granter_conn
                                  : kv.second.granter == g.granter;
        }));
    if (grants_.size() >= kMaxGrants || mine >= kMaxPerGranter) {
        return fail_errno(ENOSPC);
    }
    g.handle = next_++;
    const std::uint32_t h = g.handle;
    grants_.emplace(h, std::move(g));
    return h;
}

Grant* Table::find(std::uint32_t handle) {
    auto it = grants_.find(handle);
    return it == grants_.end() ? nullptr : &it->second;
}

}  // namespace hv::hvmin::iomem
