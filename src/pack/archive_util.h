// Owning handles for libarchive objects, shared by the pack reader/writer and layer extraction.
#pragma once

#include <archive.h>

#include <filesystem>
#include <memory>
#include <string>

namespace vial::pack {

struct ArchiveReadFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
using ArchiveReader = std::unique_ptr<archive, ArchiveReadFree>;
using ArchiveWriter = std::unique_ptr<archive, ArchiveWriteFree>;

// A reader of `path` for tar archives, plain or compressed with anything libarchive knows
// (gzip, zstd, xz, bzip2...). Throws Error(invalid_input) "<what> is not a tar archive (...)"
// when it is not one; `what` describes the file ("the docker save archive x.tar").
ArchiveReader open_tar_reader(const std::filesystem::path& path, const std::string& what);

// libarchive's last error message for `a` (or "unknown error").
std::string archive_message(archive* a);

}  // namespace vial::pack
