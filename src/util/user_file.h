// Files that vial reads because a user named them (code, configs, uploads, tokens). Such a
// path may be anything: /dev/zero would grow the process without bound, a FIFO would block a
// thread for ever. So: regular files only, and a size limit for each kind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace vial {

inline constexpr uint64_t kMaxCodeFileBytes = 10ull << 20;
inline constexpr uint64_t kMaxConfigFileBytes = 1ull << 20;
inline constexpr uint64_t kMaxUploadFileBytes = 1ull << 30;

// The whole file. Error(invalid_input) when it can't be opened or is not a regular file,
// Error(too_large) when it is over `limit`; `what` names it in the message ("the code file").
std::string read_user_file(const std::filesystem::path& path, uint64_t limit, const std::string& what);

}  // namespace vial
