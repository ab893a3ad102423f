// Reading a pack: one streaming pass that checks every part against the manifest.
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <map>

#include "pack/archive_util.h"
#include "pack/interrupt.h"
#include "pack/pack.h"
#include "pack/sha256.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

constexpr la_ssize_t kMaxManifestBytes = 1 << 20;
constexpr const char* kWhatIsAPack =
    " (a pack is a zstd-compressed tar that starts with manifest.json; make one with `vial pack create`)";

// Parts being extracted live under temporary names until all of them are verified.
class StagedParts final {
 public:
  explicit StagedParts(fs::path dir) : dir_(std::move(dir)) {}
  StagedParts(const StagedParts&) = delete;
  StagedParts& operator=(const StagedParts&) = delete;
  ~StagedParts() {
    std::error_code ec;
    for (const auto& [name, temp] : temps_) fs::remove(temp, ec);
  }

  UniqueFd open(const std::string& name) {
    fs::path temp = dir_ / ("." + name + ".partial-" + std::to_string(::getpid()));
    UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) throw_errno("cannot write " + temp.string(), errno);
    temps_[name] = temp;
    return fd;
  }

  void commit() {
    for (const auto& [name, temp] : temps_) {
      std::error_code ec;
      fs::rename(temp, dir_ / name, ec);
      if (ec) throw Error(ErrorKind::internal, "cannot rename " + temp.string() + ": " + ec.message());
    }
    temps_.clear();
  }

 private:
  fs::path dir_;
  std::map<std::string, fs::path> temps_;
};

void write_all(int fd, const void* data, size_t size, const std::string& what) {
  auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) {
      throw_if_interrupted();
      continue;
    }
    if (n < 0) throw_errno("cannot write " + what, errno);
    p += n;
    size -= static_cast<size_t>(n);
  }
}

[[noreturn]] void damaged(const std::string& origin, const std::string& detail) {
  throw_if_interrupted();
  throw Error(ErrorKind::invalid_input, origin + " is damaged: " + detail);
}

PackManifest read_head(archive* a, const std::string& origin) {
  archive_entry* entry = nullptr;
  if (archive_read_next_header(a, &entry) != ARCHIVE_OK) {
    throw_if_interrupted();
    throw Error(ErrorKind::invalid_input, origin + " is not a vial pack: " + archive_message(a) + kWhatIsAPack);
  }
  if (std::string(archive_entry_pathname(entry)) != kManifestName) {
    throw Error(ErrorKind::invalid_input, origin + " is not a vial pack: its first entry is '" +
                                              archive_entry_pathname(entry) + "'" + kWhatIsAPack);
  }
  std::string text;
  char buf[1 << 14];
  for (;;) {
    la_ssize_t n = archive_read_data(a, buf, sizeof buf);
    if (n < 0) damaged(origin, "its manifest.json cannot be read (" + archive_message(a) + ")");
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (static_cast<la_ssize_t>(text.size()) > kMaxManifestBytes) {
      throw Error(ErrorKind::invalid_input, origin + " is not a vial pack: its manifest.json is over 1 MiB");
    }
  }
  auto json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded()) damaged(origin, "its manifest.json is not valid JSON");
  return manifest_from_json(json, origin);
}

PackManifest read_pack(const fs::path& path, const fs::path* dest_dir) {
  const std::string origin = path.string();
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (!fs::exists(status)) throw Error(ErrorKind::not_found, "pack " + origin + " does not exist");
  if (!fs::is_regular_file(status)) throw Error(ErrorKind::invalid_input, origin + " is not a file, so not a vial pack");

  ArchiveReader a;
  try {
    a = open_tar_reader(path, origin);
  } catch (const Error&) {
    throw Error(ErrorKind::invalid_input, origin + " is not a vial pack: it is no tar archive at all" + kWhatIsAPack);
  }
  PackManifest manifest = read_head(a.get(), origin);

  std::optional<StagedParts> staged;
  if (dest_dir) {
    fs::create_directories(*dest_dir, ec);
    if (ec) throw Error(ErrorKind::internal, "cannot create " + dest_dir->string() + ": " + ec.message());
    staged.emplace(*dest_dir);
  }
  std::map<std::string, bool> seen;
  static thread_local char buf[1 << 20];
  for (;;) {
    throw_if_interrupted();
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(a.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      damaged(origin, "the archive breaks off after " + std::to_string(seen.size()) + " of " +
                          std::to_string(manifest.parts.size()) + " parts (" + archive_message(a.get()) +
                          "): it is truncated or corrupted");
    }
    const std::string name = archive_entry_pathname(entry);
    const PackPart* part = manifest.part(name);
    if (!part) damaged(origin, "it holds '" + name + "', which its manifest does not list");
    if (seen[name]) damaged(origin, "it holds part '" + name + "' twice");
    seen[name] = true;

    UniqueFd out;
    if (staged) out = staged->open(name);
    Sha256 hash;
    uint64_t size = 0;
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
      if (n < 0) {
        damaged(origin, "part '" + name + "' cannot be read after " + std::to_string(size) + " bytes (" +
                            archive_message(a.get()) + "): it is truncated or corrupted");
      }
      if (n == 0) break;
      hash.update(buf, static_cast<size_t>(n));
      size += static_cast<uint64_t>(n);
      if (out.valid()) write_all(out.get(), buf, static_cast<size_t>(n), (*dest_dir / name).string());
      throw_if_interrupted();
    }
    if (size != part->size) {
      damaged(origin, "part '" + name + "' has " + std::to_string(size) + " bytes but its manifest says " +
                          std::to_string(part->size) + ": it is truncated or was tampered with");
    }
    if (hash.hex_digest() != part->sha256) {
      damaged(origin, "part '" + name + "' does not match its SHA-256 in the manifest: it was corrupted or tampered with");
    }
  }
  for (const auto& p : manifest.parts) {
    if (!seen[p.name]) damaged(origin, "part '" + p.name + "' is missing: the pack is truncated");
  }
  if (staged) staged->commit();
  return manifest;
}

}  // namespace

PackManifest read_manifest(const fs::path& pack_path) { return read_pack(pack_path, nullptr); }

PackManifest extract(const fs::path& pack_path, const fs::path& dest_dir) { return read_pack(pack_path, &dest_dir); }

}  // namespace vial::pack
