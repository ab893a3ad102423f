#include "pack/layers.h"

#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <vector>

#include "pack/archive_util.h"
#include "pack/interrupt.h"
#include "pack/whiteout.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

// Owners are kept only when we may set them; numeric ids only (never the host's user names).
int extract_flags() {
  int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_UNLINK |
              ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT;
  if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
  return flags;
}

bool is_real_dir(const fs::path& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

[[noreturn]] void fail(const std::string& what, const std::string& detail) {
  throw_if_interrupted();
  throw Error(ErrorKind::invalid_input, "cannot extract " + what + ": " + detail);
}

// A write to disk failed: the archive's fault (a bad entry), or the host's (disk full).
[[noreturn]] void write_failed(archive* out, const std::string& what, const std::string& name) {
  throw_if_interrupted();
  const int err = archive_errno(out);
  const bool host = err == ENOSPC || err == EDQUOT || err == EIO || err == EROFS;
  throw Error(host ? ErrorKind::internal : ErrorKind::invalid_input,
              "cannot extract " + what + ": entry '" + name + "': " + archive_message(out) +
                  (err == ENOSPC ? " (the disk holding $VIAL_HOME/cache is full)" : ""));
}

std::string normalized_or_fail(const char* path, const std::string& what) {
  auto norm = normalize_entry_path(path ? path : "");
  if (!norm) fail(what, "entry '" + std::string(path ? path : "") + "' points outside the root filesystem (..)");
  return *norm;
}

// Whiteout entries of one layer, applied before its other entries are extracted.
std::vector<Whiteout> read_whiteouts(const fs::path& tar, const std::string& what) {
  std::vector<Whiteout> out;
  ArchiveReader in = open_tar_reader(tar, what);
  for (;;) {
    throw_if_interrupted();
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) fail(what, archive_message(in.get()));
    Whiteout w = classify_whiteout(normalized_or_fail(archive_entry_pathname(entry), what));
    if (w.kind != WhiteoutKind::none) out.push_back(std::move(w));
  }
  return out;
}

void copy_data(archive* in, archive* out, const std::string& what, const std::string& name) {
  for (;;) {
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(in, &block, &size, &offset);
    if (r == ARCHIVE_EOF) return;
    if (r < ARCHIVE_WARN) fail(what, "entry '" + name + "': " + archive_message(in));
    if (archive_write_data_block(out, block, size, offset) < ARCHIVE_WARN) write_failed(out, what, name);
  }
}

void extract(const fs::path& tar, const fs::path& root_dir, const std::string& what, bool skip_whiteouts) {
  const fs::path root = fs::canonical(root_dir);  // SECURE_SYMLINKS checks the whole path
  ArchiveReader in = open_tar_reader(tar, what);
  ArchiveWriter out(archive_write_disk_new());
  if (!out) throw Error(ErrorKind::internal, "out of memory (archive_write_disk_new)");
  archive_write_disk_set_options(out.get(), extract_flags());
  for (;;) {
    throw_if_interrupted();
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) fail(what, archive_message(in.get()));
    const std::string name = normalized_or_fail(archive_entry_pathname(entry), what);
    if (name.empty()) continue;  // the root itself keeps the mode vial gives it
    if (skip_whiteouts && classify_whiteout(name).kind != WhiteoutKind::none) continue;
    const fs::path target = root / name;
    archive_entry_set_pathname(entry, target.c_str());
    if (const char* link = archive_entry_hardlink(entry)) {
      // Checked here: link(2) follows symlinked directories on the way to the target.
      auto link_target = path_inside(root, normalized_or_fail(link, what));
      if (!link_target) fail(what, "hard link '" + name + "' points through a symlink or at nothing: '" + link + "'");
      archive_entry_set_hardlink(entry, link_target->c_str());
    }
    // A file replacing a lower layer's directory: libarchive only removes empty ones.
    if (archive_entry_filetype(entry) != AE_IFDIR && is_real_dir(target)) {
      std::error_code ec;
      fs::remove_all(target, ec);
    }
    r = archive_write_header(out.get(), entry);
    if (r < ARCHIVE_WARN) write_failed(out.get(), what, name);
    if (archive_entry_size(entry) > 0) copy_data(in.get(), out.get(), what, name);
    if (archive_write_finish_entry(out.get()) < ARCHIVE_WARN) write_failed(out.get(), what, name);
  }
  if (archive_write_close(out.get()) < ARCHIVE_WARN) write_failed(out.get(), what, "(final fix-ups)");
}

}  // namespace

void extract_tar(const fs::path& tar, const fs::path& root, const std::string& what) {
  extract(tar, root, what, /*skip_whiteouts=*/false);
}

void apply_layer(const fs::path& tar, const fs::path& root_dir, const std::string& what) {
  const fs::path root = fs::canonical(root_dir);
  for (const auto& w : read_whiteouts(tar, what)) apply_whiteout(root, w);
  extract(tar, root, what, /*skip_whiteouts=*/true);
}

}  // namespace vial::pack
