// Files inside a running guest, over the agent channel: every operation is one argv exec of
// a small sh script using the guest's coreutils, findutils and tar (no protocol of its own).
//
// IMPORTANT: with as_root false the operations run as the sandbox user and are confined to
// the sandbox home: the guest resolves the path (symlinks followed, realpath) and refuses one
// that lands outside /home/sandbox. That is the HTTP API's policy, not the security boundary
// (the VM is): a program in the guest racing a symlink swap can only redirect the access to
// what the sandbox user may touch anyway. With as_root true (named machines) any path goes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "vm/agent_client.h"

namespace vial {

// The sandbox user's home in every image; relative session paths live under it.
inline constexpr std::string_view kSandboxHome = "/home/sandbox";

struct GuestEntry {
  std::string name;   // file name (list_dir) or the resolved absolute path (stat_path)
  std::string type;   // "file", "dir", "symlink" or "other"
  uint64_t size = 0;  // bytes
  unsigned mode = 0;  // permission bits (07777)
  int64_t mtime = 0;  // seconds since the epoch
};

// The HTTP API's path policy: `user_path` relative to the sandbox home, or absolute inside it.
// Returns the normalized absolute guest path; throws Error(invalid_input) for an empty path,
// a NUL byte, a `..` component or an absolute path outside the home. "." is the home itself.
std::string resolve_session_path(std::string_view user_path);

// Writes `data` byte-exact to `guest_path` with permission bits `mode`, creating missing
// parent directories; replaces an existing file atomically (rename). Any size: stdin goes
// in frames of at most agent::kMaxPayload.
asio::awaitable<void> write_file(AgentClient& agent, std::string guest_path, std::string data, unsigned mode,
                                 bool as_root);

// The file's bytes. Error(not_found) when missing; Error(invalid_input) when it is a
// directory, not a regular file, or bigger than `max_bytes` (the message says the limit).
asio::awaitable<std::string> read_file(AgentClient& agent, std::string guest_path, uint64_t max_bytes,
                                       bool as_root);

// The entries of a directory (not recursive, without . and ..), sorted by name.
// Error(not_found) when missing, Error(invalid_input) when not a directory.
asio::awaitable<std::vector<GuestEntry>> list_dir(AgentClient& agent, std::string guest_dir, bool as_root);

// What `guest_path` is (symlinks followed), or nothing when it does not exist.
asio::awaitable<std::optional<GuestEntry>> stat_path(AgentClient& agent, std::string guest_path, bool as_root);

// Copies a host file or directory tree to `guest_path` (the name of the copy, not a folder
// to put it in), preserving permission bits; a directory merges into an existing one.
// Symlinks are copied as symlinks. Owners are not kept: the copy belongs to the user doing it.
asio::awaitable<void> copy_in(AgentClient& agent, std::filesystem::path host_path, std::string guest_path,
                              bool as_root);

// Copies a guest file or directory tree to `host_path` (the name of the copy), preserving
// permission bits (never setuid/setgid/sticky) and mtimes. The guest is untrusted: only
// regular files, directories and symlinks are extracted, never through a symlink, never
// outside host_path. Symlinks that point outside the copied tree (absolute, or climbing out
// with ..) are not copied: a later write through one would land anywhere on the host. Their
// names are returned. The tree can't set host_path's own mode. A single file is written
// without following a symlink at host_path. At most kMaxCopyOutBytes of tar travel.
inline constexpr uint64_t kMaxCopyOutBytes = 1ull << 30;
asio::awaitable<std::vector<std::string>> copy_out(AgentClient& agent, std::string guest_path,
                                                   std::filesystem::path host_path, bool as_root);

}  // namespace vial
