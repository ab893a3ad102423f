// Writes small tar archives entry by entry (libarchive) for pack tests: rootfs tarballs,
// image layers with whiteouts, `docker save` archives, hostile entries.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

namespace vial::test {

class TarBuilder final {
 public:
  // filter: "none", "gzip" or "zstd".
  explicit TarBuilder(const std::filesystem::path& path, const std::string& filter = "none")
      : a_(archive_write_new(), archive_write_free) {
    archive_write_set_format_pax_restricted(a_.get());
    if (filter == "gzip") archive_write_add_filter_gzip(a_.get());
    if (filter == "zstd") archive_write_add_filter_zstd(a_.get());
    check(archive_write_open_filename(a_.get(), path.c_str()));
  }
  ~TarBuilder() { close(); }
  TarBuilder(const TarBuilder&) = delete;
  TarBuilder& operator=(const TarBuilder&) = delete;

  TarBuilder& file(const std::string& name, const std::string& content, int mode = 0644, int uid = 0) {
    auto e = entry(name, AE_IFREG, mode, uid);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(content.size()));
    check(archive_write_header(a_.get(), e.get()));
    if (!content.empty()) archive_write_data(a_.get(), content.data(), content.size());
    return *this;
  }
  TarBuilder& dir(const std::string& name, int mode = 0755) {
    auto e = entry(name, AE_IFDIR, mode, 0);
    check(archive_write_header(a_.get(), e.get()));
    return *this;
  }
  TarBuilder& symlink(const std::string& name, const std::string& target) {
    auto e = entry(name, AE_IFLNK, 0777, 0);
    archive_entry_set_symlink(e.get(), target.c_str());
    check(archive_write_header(a_.get(), e.get()));
    return *this;
  }
  TarBuilder& hardlink(const std::string& name, const std::string& target) {
    auto e = entry(name, AE_IFREG, 0644, 0);
    archive_entry_set_hardlink(e.get(), target.c_str());
    archive_entry_set_size(e.get(), 0);
    check(archive_write_header(a_.get(), e.get()));
    return *this;
  }
  // Copies a file from disk as entry `name`.
  TarBuilder& file_from(const std::string& name, const std::filesystem::path& source) {
    std::FILE* f = std::fopen(source.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot read " + source.string());
    std::string content;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) content.append(buf, n);
    std::fclose(f);
    return file(name, content);
  }
  void close() {
    if (a_) archive_write_close(a_.get());
    a_.reset();
  }

 private:
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(const std::string& name, unsigned type, int mode,
                                                                      int uid) {
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), mode);
    archive_entry_set_uid(e.get(), uid);
    archive_entry_set_gid(e.get(), uid);
    archive_entry_set_mtime(e.get(), 1700000000, 0);
    return e;
  }
  void check(int r) {
    if (r < ARCHIVE_WARN) throw std::runtime_error(std::string("libarchive: ") + archive_error_string(a_.get()));
  }
  std::unique_ptr<archive, decltype(&archive_write_free)> a_;
};

}  // namespace vial::test
