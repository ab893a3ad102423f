#include "pack/pack_writer.h"

#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <exception>

#include "pack/archive_util.h"
#include "pack/interrupt.h"
#include "pack/sha256.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

// zstd level 3 (the CLI's default) with a frame checksum, so any flipped byte in the pack,
// manifest included, fails decompression. libarchive's own zstd filter sets no checksum.
constexpr int kZstdLevel = 3;

// Receives the tar stream from libarchive and writes it zstd-compressed to a file.
class ZstdFileSink final {
 public:
  ZstdFileSink(int fd, std::string what) : fd_(fd), what_(std::move(what)), cctx_(ZSTD_createCCtx()) {
    if (!cctx_) throw Error(ErrorKind::internal, "out of memory (ZSTD_createCCtx)");
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, kZstdLevel);
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
    out_.resize(ZSTD_CStreamOutSize());
  }
  ~ZstdFileSink() { ZSTD_freeCCtx(cctx_); }
  ZstdFileSink(const ZstdFileSink&) = delete;
  ZstdFileSink& operator=(const ZstdFileSink&) = delete;

  void write(const void* data, size_t size) { pump(data, size, ZSTD_e_continue); }
  void finish() { pump(nullptr, 0, ZSTD_e_end); }

 private:
  void pump(const void* data, size_t size, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data, size, 0};
    for (;;) {
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      size_t left = ZSTD_compressStream2(cctx_, &out, &in, mode);
      if (ZSTD_isError(left)) throw Error(ErrorKind::internal, std::string("zstd: ") + ZSTD_getErrorName(left));
      write_fd(out_.data(), out.pos);
      bool done = mode == ZSTD_e_end ? left == 0 : in.pos == in.size;
      if (done) return;
    }
  }
  void write_fd(const char* p, size_t size) {
    while (size > 0) {
      ssize_t n = ::write(fd_, p, size);
      if (n < 0 && errno == EINTR) {
        throw_if_interrupted();
        continue;
      }
      if (n < 0) throw_errno("cannot write " + what_, errno);
      p += n;
      size -= static_cast<size_t>(n);
    }
  }

  int fd_;
  std::string what_;
  ZSTD_CCtx* cctx_;
  std::string out_;
};

// libarchive's write callback. libarchive is C: an exception must not cross it, so the sink's
// error is kept here and rethrown once libarchive has returned.
struct SinkClient {
  ZstdFileSink* sink;
  std::exception_ptr error;
};

la_ssize_t sink_write(archive*, void* client, const void* data, size_t size) {
  auto* self = static_cast<SinkClient*>(client);
  try {
    self->sink->write(data, size);
    return static_cast<la_ssize_t>(size);
  } catch (...) {
    self->error = std::current_exception();
    return -1;
  }
}

// The temp file a pack is written to; removed unless committed.
class TempOutput final {
 public:
  explicit TempOutput(const fs::path& out)
      : out_(out), temp_(out.parent_path() / ("." + out.filename().string() + ".partial-" + std::to_string(::getpid()))) {
    fd_.reset(::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd_.valid()) throw_errno("cannot create " + temp_.string(), errno);
  }
  ~TempOutput() {
    if (!committed_) ::unlink(temp_.c_str());
  }
  TempOutput(const TempOutput&) = delete;
  TempOutput& operator=(const TempOutput&) = delete;

  int fd() const { return fd_.get(); }
  const fs::path& path() const { return temp_; }

  void commit(bool force) {
    if (::fsync(fd_.get()) != 0) throw_errno("cannot write " + temp_.string(), errno);
    fd_.reset();
    // RENAME_NOREPLACE: a file that appeared at `out` meanwhile is never clobbered.
    if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, out_.c_str(), force ? 0 : RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) check_output_path(out_, force);
      throw_errno("cannot rename " + temp_.string() + " to " + out_.string(), errno);
    }
    committed_ = true;
  }

 private:
  fs::path out_;
  fs::path temp_;
  UniqueFd fd_;
  bool committed_ = false;
};

void add_entry(archive* a, const std::string& name, uint64_t size, const std::string& out) {
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(), archive_entry_free);
  archive_entry_set_pathname(entry.get(), name.c_str());
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(size));
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0644);
  archive_entry_set_mtime(entry.get(), std::time(nullptr), 0);
  if (archive_write_header(a, entry.get()) != ARCHIVE_OK) {
    throw Error(ErrorKind::internal, "cannot write " + out + ": " + archive_message(a));
  }
}

void write_data(archive* a, const void* data, size_t size, const std::string& out) {
  if (archive_write_data(a, data, size) != static_cast<la_ssize_t>(size)) {
    throw_if_interrupted();
    throw Error(ErrorKind::internal, "cannot write " + out + ": " + archive_message(a));
  }
}

// Copies `file` into the archive as entry `part`, checking it still has the digest measured
// before the manifest was written.
void copy_part(archive* a, const PackPart& part, const fs::path& file, const std::string& out) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw_errno("cannot read " + file.string(), errno);
  add_entry(a, part.name, part.size, out);
  Sha256 hash;
  uint64_t copied = 0;
  static thread_local char buf[1 << 20];
  for (;;) {
    throw_if_interrupted();
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read " + file.string(), errno);
    if (n == 0) break;
    hash.update(buf, static_cast<size_t>(n));
    copied += static_cast<uint64_t>(n);
    if (copied > part.size) break;
    write_data(a, buf, static_cast<size_t>(n), out);
  }
  if (copied != part.size || hash.hex_digest() != part.sha256) {
    throw Error(ErrorKind::internal, file.string() + " changed while it was being packed: try again");
  }
}

}  // namespace

void check_output_path(const fs::path& out, bool force) {
  std::error_code ec;
  auto status = fs::symlink_status(out, ec);
  if (fs::is_directory(status)) {
    throw Error(ErrorKind::invalid_input, out.string() + " is a directory: give the pack file's name, e.g. " +
                                              (out / "machine.vial").string());
  }
  if (fs::exists(status) && !force) {
    throw Error(ErrorKind::invalid_input, out.string() + " already exists: choose another name or pass --force to replace it");
  }
  fs::path dir = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  if (!fs::is_directory(dir, ec)) {
    throw Error(ErrorKind::invalid_input, "cannot write " + out.string() + ": folder " + dir.string() + " does not exist");
  }
}

uint64_t write_pack(PackManifest& manifest, const std::vector<PartFile>& files, const fs::path& out, bool force,
                    const std::function<void(const std::string&)>& progress) {
  check_output_path(out, force);
  manifest.parts.clear();
  std::vector<fs::path> paths;
  for (const auto& name : part_names()) {
    auto it = std::find_if(files.begin(), files.end(), [&](const PartFile& f) { return f.name == name; });
    if (it == files.end()) throw Error(ErrorKind::internal, "write_pack: part " + name + " not given");
    FileDigest digest = digest_file(it->path);
    manifest.parts.push_back({name, digest.size, digest.sha256});
    paths.push_back(it->path);
  }
  uint64_t total = 0;
  for (const auto& p : manifest.parts) total += p.size;
  if (progress) progress("compressing " + std::to_string(total >> 20) + " MiB into " + out.string());

  const std::string out_name = out.string();
  TempOutput temp(out);
  ZstdFileSink sink(temp.fd(), temp.path().string());
  SinkClient client{&sink, nullptr};
  ArchiveWriter a(archive_write_new());
  if (!a) throw Error(ErrorKind::internal, "out of memory (archive_write_new)");
  archive_write_set_format_pax_restricted(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_open2(a.get(), &client, nullptr, sink_write, nullptr, nullptr) != ARCHIVE_OK) {
    throw Error(ErrorKind::internal, "cannot write " + out_name + ": " + archive_message(a.get()));
  }
  try {
    const std::string text = to_json(manifest).dump(2) + "\n";
    add_entry(a.get(), kManifestName, text.size(), out_name);
    write_data(a.get(), text.data(), text.size(), out_name);
    for (size_t i = 0; i < paths.size(); ++i) copy_part(a.get(), manifest.parts[i], paths[i], out_name);
    if (archive_write_close(a.get()) != ARCHIVE_OK) {
      throw Error(ErrorKind::internal, "cannot write " + out_name + ": " + archive_message(a.get()));
    }
  } catch (...) {
    if (client.error) std::rethrow_exception(client.error);  // the sink's error is the real one
    throw;
  }
  sink.finish();
  struct stat st{};
  ::fstat(temp.fd(), &st);
  temp.commit(force);
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace vial::pack
