#include "pack/archive_util.h"

#include "util/error.h"

namespace vial::pack {

std::string archive_message(archive* a) {
  const char* message = archive_error_string(a);
  return message ? message : "unknown error";
}

ArchiveReader open_tar_reader(const std::filesystem::path& path, const std::string& what) {
  ArchiveReader a(archive_read_new());
  if (!a) throw Error(ErrorKind::internal, "out of memory (archive_read_new)");
  archive_read_support_filter_all(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open_filename(a.get(), path.c_str(), 1 << 16) != ARCHIVE_OK) {
    throw Error(ErrorKind::invalid_input, what + " is not a tar archive (" + archive_message(a.get()) + ")");
  }
  return a;
}

}  // namespace vial::pack
