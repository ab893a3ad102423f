#include "sandbox/guest_files.h"

#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "pack/archive_util.h"
#include "util/error.h"
#include "util/unique_fd.h"
#include "util/user_file.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

// A file operation may move a lot of data through an emulated serial port.
constexpr uint32_t kFileOpTimeoutMs = 600'000;
constexpr uint64_t kListLimit = 64ull << 20;
constexpr uint64_t kStderrLimit = 16u << 10;

// The guest half. $1 op, $2 the home to stay in ("" for none), $3 path, $4 op argument.
// Exit codes 10-16 are the refusals mapped in check() below; 0 is success.
constexpr const char* kScript = R"SH(
op=$1 home=$2 p=$3
fail() { code=$1; shift; printf '%s' "$*" >&2; exit "$code"; }
r=$(realpath -m -- "$p" 2>/dev/null) || fail 10 "cannot resolve it"
if [ -n "$home" ]; then
  case $r in "$home"|"$home"/*) ;; *) fail 11 "$r";; esac
fi
case $op in
read)
  [ -e "$r" ] || fail 12
  [ ! -d "$r" ] || fail 13
  [ -f "$r" ] || fail 14
  size=$(stat -c %s -- "$r") || exit 1
  [ "$size" -le "$4" ] || fail 15 "$size"
  exec cat -- "$r" ;;
write)
  [ ! -d "$r" ] || fail 13
  d=$(dirname -- "$r")
  mkdir -p -- "$d" || exit 1
  t=$(mktemp -p "$d" .vial-write-XXXXXX) || exit 1
  if cat >"$t" && chmod "$4" -- "$t" && mv -f -- "$t" "$r"; then exit 0; fi
  rm -f -- "$t"
  exit 1 ;;
list)
  [ -e "$r" ] || fail 12
  [ -d "$r" ] || fail 16
  exec find "$r" -mindepth 1 -maxdepth 1 -printf '%y %s %m %T@ %f\0' ;;
stat)
  [ -e "$r" ] || exit 0
  exec find "$r" -maxdepth 0 -printf '%y %s %m %T@ %p\0' ;;
tar-out)
  [ -e "$r" ] || fail 12
  if [ -d "$r" ]; then printf D; exec tar -C "$r" -cf - . ; fi
  [ -f "$r" ] || fail 14
  printf 'F%s\n' "$(stat -c %a -- "$r")"
  exec cat -- "$r" ;;
tar-in)
  [ ! -e "$r" ] || [ -d "$r" ] || fail 16
  mkdir -p -- "$r" && exec tar -C "$r" -xpf - --no-same-owner ;;
esac
fail 2 "unknown operation $op"
)SH";

struct ScriptOutput {
  std::string out;
  std::string err;
  agent::ExecResult exit;
};

// string_view parameters: GCC 12 miscompiles string literals bound to by-value std::string
// parameters inside co_await expressions.
asio::awaitable<ScriptOutput> run_script(AgentClient& agent, std::string_view op, std::string_view path,
                                         std::string_view arg, bool as_root, uint64_t stdout_limit,
                                         std::optional<std::string> stdin_data = std::nullopt) {
  agent::ExecRequest request;
  request.argv = {"/bin/sh",
                  "-c",
                  kScript,
                  "vial-files",
                  std::string(op),
                  as_root ? std::string() : std::string(kSandboxHome),
                  std::string(path),
                  std::string(arg)};
  request.cwd = "/";
  request.as_root = as_root;
  request.timeout_ms = kFileOpTimeoutMs;
  request.stdout_limit = stdout_limit;
  request.stderr_limit = kStderrLimit;
  ScriptOutput output;
  ExecCallbacks sinks;
  sinks.on_stdout = [&](std::string_view chunk) { output.out.append(chunk); };
  sinks.on_stderr = [&](std::string_view chunk) { output.err.append(chunk); };
  output.exit = co_await agent.exec(request, sinks, std::move(stdin_data));
  co_return output;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Turns a failed script run into the Error its exit code stands for.
void check(const ScriptOutput& o, const std::string& what, const std::string& path, uint64_t limit = 0) {
  if (o.exit.timed_out) {
    throw Error(ErrorKind::timeout, what + " " + path + " in the guest took longer than " +
                                        std::to_string(kFileOpTimeoutMs / 1000) + " s");
  }
  if (o.exit.exit_code == 0) return;
  const std::string detail = trimmed(o.err);
  switch (o.exit.exit_code.value_or(-1)) {
    case 10: throw Error(ErrorKind::invalid_input, "cannot resolve the guest path " + path);
    case 11:
      throw Error(ErrorKind::invalid_input, path + " resolves to " + detail + ", outside " +
                                                std::string(kSandboxHome) + ": paths must stay in the sandbox home");
    case 12: throw Error(ErrorKind::not_found, "no such file or directory in the guest: " + path);
    case 13: throw Error(ErrorKind::invalid_input, path + " is a directory in the guest");
    case 14: throw Error(ErrorKind::invalid_input, path + " is not a regular file in the guest");
    case 15:
      throw Error(ErrorKind::too_large, path + " is " + detail + " bytes, over the limit of " +
                                                std::to_string(limit) + " bytes");
    case 16: throw Error(ErrorKind::invalid_input, path + " is not a directory in the guest");
    default: break;
  }
  std::string how = o.exit.exit_code ? "exit code " + std::to_string(*o.exit.exit_code)
                                     : "signal " + std::to_string(o.exit.signal.value_or(0));
  throw Error(ErrorKind::invalid_input,
              what + " " + path + " in the guest failed (" + how + ")" + (detail.empty() ? "" : ": " + detail));
}

// Parses find's "%y %s %m %T@ NAME\0" records.
std::vector<GuestEntry> parse_entries(std::string_view text) {
  std::vector<GuestEntry> entries;
  while (!text.empty()) {
    size_t end = text.find('\0');
    if (end == std::string_view::npos) throw Error(ErrorKind::internal, "unterminated file list from the guest");
    std::string_view record = text.substr(0, end);
    text.remove_prefix(end + 1);
    std::string_view fields[4];
    for (auto& field : fields) {
      size_t space = record.find(' ');
      if (space == std::string_view::npos) throw Error(ErrorKind::internal, "malformed file list from the guest");
      field = record.substr(0, space);
      record.remove_prefix(space + 1);
    }
    GuestEntry e;
    e.type = fields[0] == "f" ? "file" : fields[0] == "d" ? "dir" : fields[0] == "l" ? "symlink" : "other";
    e.size = std::stoull(std::string(fields[1]));
    e.mode = static_cast<unsigned>(std::stoul(std::string(fields[2]), nullptr, 8));
    e.mtime = static_cast<int64_t>(std::floor(std::stod(std::string(fields[3]))));
    e.name = std::string(record);
    entries.push_back(std::move(e));
  }
  return entries;
}

std::string octal(unsigned mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%o", mode & 07777);
  return buf;
}

using pack::ArchiveReader;
using pack::ArchiveWriter;
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<archive_entry, EntryFree>;

[[noreturn]] void archive_failure(archive* a, const std::string& what) {
  throw Error(ErrorKind::invalid_input, what + ": " + pack::archive_message(a));
}

la_ssize_t append_to_string(archive*, void* out, const void* data, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), n);
  return static_cast<la_ssize_t>(n);
}

// A tar (pax) of the tree under `dir`, member names relative to it ("./a/b").
std::string tar_tree(const fs::path& dir) {
  ArchiveReader disk(archive_read_disk_new());
  archive_read_disk_set_symlink_physical(disk.get());
  archive_read_disk_set_standard_lookup(disk.get());
  if (archive_read_disk_open(disk.get(), dir.c_str()) != ARCHIVE_OK) archive_failure(disk.get(), "reading " + dir.string());
  std::string tar;
  ArchiveWriter out(archive_write_new());
  archive_write_set_format_pax_restricted(out.get());
  archive_write_set_bytes_in_last_block(out.get(), 1);
  if (archive_write_open(out.get(), &tar, nullptr, append_to_string, nullptr) != ARCHIVE_OK) {
    archive_failure(out.get(), "starting a tar");
  }
  const std::string root = dir.string();
  std::string buf(64 * 1024, '\0');
  for (;;) {
    EntryPtr entry(archive_entry_new());
    int r = archive_read_next_header2(disk.get(), entry.get());
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) archive_failure(disk.get(), "reading " + root);
    archive_read_disk_descend(disk.get());
    std::string name = archive_entry_pathname(entry.get());
    archive_entry_set_pathname(entry.get(), ("." + name.substr(std::min(name.size(), root.size()))).c_str());
    if (archive_write_header(out.get(), entry.get()) < ARCHIVE_WARN) archive_failure(out.get(), "writing a tar");
    if (archive_entry_filetype(entry.get()) != AE_IFREG || archive_entry_size(entry.get()) == 0) continue;
    for (;;) {
      la_ssize_t n = archive_read_data(disk.get(), buf.data(), buf.size());
      if (n < 0) archive_failure(disk.get(), "reading " + name);
      if (n == 0) break;
      if (archive_write_data(out.get(), buf.data(), static_cast<size_t>(n)) < 0) archive_failure(out.get(), "writing a tar");
    }
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK) archive_failure(out.get(), "finishing a tar");
  return tar;
}

// Rewrites a member name of the guest's tar to a path under `dest`; refuses absolute names
// and `..` (the guest is untrusted).
std::string host_member_path(const fs::path& dest, const char* member) {
  fs::path rel = fs::path(member ? member : "").lexically_normal();
  if (rel.is_absolute()) throw Error(ErrorKind::invalid_input, "the guest's tar has an absolute path: " + rel.string());
  for (const auto& part : rel) {
    if (part == "..") throw Error(ErrorKind::invalid_input, "the guest's tar has a path with '..': " + rel.string());
  }
  return rel.empty() || rel == "." ? dest.string() : (dest / rel).string();
}

// True when a symlink at `member` (relative to the copied tree) pointing to `target` stays
// inside the tree.
bool link_stays_inside(const fs::path& member, const char* target) {
  fs::path t(target ? target : "");
  if (t.empty() || t.is_absolute()) return false;
  fs::path resolved = (member.parent_path() / t).lexically_normal();
  return resolved.empty() || *resolved.begin() != "..";
}

// Extracts the guest's tar under `dest`: files, directories and symlinks that stay inside the
// tree, plain permission bits, never through a symlink. Returns the symlinks it left out.
std::vector<std::string> untar_tree(const std::string& tar, const fs::path& dest) {
  std::vector<std::string> skipped;
  ArchiveReader in(archive_read_new());
  archive_read_support_format_tar(in.get());
  if (archive_read_open_memory(in.get(), tar.data(), tar.size()) != ARCHIVE_OK) {
    archive_failure(in.get(), "reading the guest's tar");
  }
  ArchiveWriter disk(archive_write_disk_new());
  archive_write_disk_set_options(disk.get(), ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME |
                                                 ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT);
  fs::create_directories(dest);
  archive_entry* entry = nullptr;
  for (;;) {
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) archive_failure(in.get(), "reading the guest's tar");
    const auto type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) continue;
    const fs::path member = fs::path(archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "").lexically_normal();
    const std::string host_path = host_member_path(dest, archive_entry_pathname(entry));
    if (host_path == dest.string()) continue;  // the tree's root: dest exists, its mode is the user's
    if (type == AE_IFLNK && !link_stays_inside(member, archive_entry_symlink(entry))) {
      skipped.push_back(member.string() + " -> " + (archive_entry_symlink(entry) ? archive_entry_symlink(entry) : ""));
      continue;
    }
    archive_entry_set_pathname(entry, host_path.c_str());
    if (const char* link = archive_entry_hardlink(entry)) {
      archive_entry_set_hardlink(entry, host_member_path(dest, link).c_str());
    }
    archive_entry_set_perm(entry, archive_entry_perm(entry) & 0777);
    if (archive_write_header(disk.get(), entry) < ARCHIVE_WARN) archive_failure(disk.get(), "extracting into " + dest.string());
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(in.get(), &block, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data_block(disk.get(), block, size, offset) < ARCHIVE_WARN) {
        archive_failure(disk.get(), "extracting into " + dest.string());
      }
    }
    if (r != ARCHIVE_EOF) archive_failure(in.get(), "reading the guest's tar");
    if (archive_write_finish_entry(disk.get()) < ARCHIVE_WARN) archive_failure(disk.get(), "extracting into " + dest.string());
  }
  if (archive_write_close(disk.get()) != ARCHIVE_OK) archive_failure(disk.get(), "extracting into " + dest.string());
  return skipped;
}


void write_host_file(const fs::path& path, std::string_view data, unsigned mode) {
  if (fs::is_directory(fs::symlink_status(path))) throw Error(ErrorKind::invalid_input, path.string() + " is a directory");
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  // O_NOFOLLOW: a symlink at the destination (one a guest could have planted) is refused, not
  // written through.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode & 0777));
  if (!fd.valid() && errno == ELOOP) {
    throw Error(ErrorKind::invalid_input, path.string() + " is a symlink: vial does not write through it; remove it "
                                                          "or copy to another name");
  }
  if (!fd.valid()) throw Error(ErrorKind::invalid_input, "cannot write " + path.string() + ": " + std::strerror(errno));
  for (size_t done = 0; done < data.size();) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(ErrorKind::invalid_input, "cannot write " + path.string() + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  ::fchmod(fd.get(), mode & 0777);
}

}  // namespace

std::string resolve_session_path(std::string_view user_path) {
  if (user_path.empty()) throw Error(ErrorKind::invalid_input, "path is empty: name a file in the sandbox home");
  if (user_path.find('\0') != std::string_view::npos) throw Error(ErrorKind::invalid_input, "path contains a NUL byte");
  const std::string home(kSandboxHome);
  std::string rest(user_path);
  if (rest.front() == '/') {
    if (rest != home && rest.rfind(home + "/", 0) != 0) {
      throw Error(ErrorKind::invalid_input, "path " + rest + " is outside the sandbox home " + home +
                                                ": use a path relative to it, or one under it");
    }
    rest.erase(0, home.size());
  }
  std::string out = home;
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t end = rest.find('/', pos);
    if (end == std::string::npos) end = rest.size();
    std::string_view part(rest.data() + pos, end - pos);
    if (part == "..") throw Error(ErrorKind::invalid_input, "path " + std::string(user_path) + " contains '..'");
    if (!part.empty() && part != ".") out += "/" + std::string(part);
    pos = end + 1;
  }
  return out;
}

asio::awaitable<void> write_file(AgentClient& agent, std::string guest_path, std::string data, unsigned mode,
                                 bool as_root) {
  auto o = co_await run_script(agent, "write", guest_path, octal(mode), as_root, kStderrLimit, std::move(data));
  check(o, "writing", guest_path);
}

asio::awaitable<std::string> read_file(AgentClient& agent, std::string guest_path, uint64_t max_bytes, bool as_root) {
  auto o = co_await run_script(agent, "read", guest_path, std::to_string(max_bytes), as_root, max_bytes);
  check(o, "reading", guest_path, max_bytes);
  if (o.exit.stdout_truncated) {  // it grew between the size check and the read
    throw Error(ErrorKind::invalid_input, guest_path + " is over the limit of " + std::to_string(max_bytes) + " bytes");
  }
  co_return std::move(o.out);
}

asio::awaitable<std::vector<GuestEntry>> list_dir(AgentClient& agent, std::string guest_dir, bool as_root) {
  auto o = co_await run_script(agent, "list", guest_dir, "", as_root, kListLimit);
  check(o, "listing", guest_dir);
  if (o.exit.stdout_truncated) {
    throw Error(ErrorKind::invalid_input, guest_dir + " has too many entries to list (over " +
                                              std::to_string(kListLimit >> 20) + " MiB of names)");
  }
  auto entries = parse_entries(o.out);
  std::sort(entries.begin(), entries.end(), [](const GuestEntry& a, const GuestEntry& b) { return a.name < b.name; });
  co_return entries;
}

asio::awaitable<std::optional<GuestEntry>> stat_path(AgentClient& agent, std::string guest_path, bool as_root) {
  auto o = co_await run_script(agent, "stat", guest_path, "", as_root, kListLimit);
  check(o, "inspecting", guest_path);
  auto entries = parse_entries(o.out);
  if (entries.empty()) co_return std::nullopt;
  co_return std::move(entries.front());
}

asio::awaitable<void> copy_in(AgentClient& agent, fs::path host_path, std::string guest_path, bool as_root) {
  std::error_code ec;
  auto st = fs::status(host_path, ec);
  if (ec || !fs::exists(st)) throw Error(ErrorKind::not_found, "no such file or directory: " + host_path.string());
  if (fs::is_directory(st)) {
    auto o = co_await run_script(agent, "tar-in", guest_path, "", as_root, kStderrLimit, tar_tree(host_path));
    check(o, "copying into", guest_path);
    co_return;
  }
  if (!fs::is_regular_file(st)) throw Error(ErrorKind::invalid_input, host_path.string() + " is not a file or directory");
  co_await write_file(agent, guest_path, read_user_file(host_path, kMaxUploadFileBytes, "the file"), static_cast<unsigned>(st.permissions()), as_root);
}

asio::awaitable<std::vector<std::string>> copy_out(AgentClient& agent, std::string guest_path, fs::path host_path,
                                                   bool as_root) {
  auto o = co_await run_script(agent, "tar-out", guest_path, "", as_root, kMaxCopyOutBytes);
  check(o, "copying", guest_path);
  if (o.exit.stdout_truncated) {
    throw Error(ErrorKind::invalid_input, guest_path + " is over " + std::to_string(kMaxCopyOutBytes >> 20) +
                                              " MiB: copy it in parts");
  }
  std::string_view out = o.out;
  if (out.starts_with('D')) co_return untar_tree(o.out.substr(1), host_path);
  size_t newline = out.find('\n');
  if (!out.starts_with('F') || newline == std::string_view::npos) {
    throw Error(ErrorKind::internal, "unexpected reply from the guest while copying " + guest_path);
  }
  unsigned mode = static_cast<unsigned>(std::stoul(std::string(out.substr(1, newline - 1)), nullptr, 8));
  write_host_file(host_path, out.substr(newline + 1), mode);
  co_return std::vector<std::string>{};
}

}  // namespace vial
