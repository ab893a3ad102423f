#include "pack/source.h"

#include "images/image_store.h"
#include "pack/docker_archive.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

constexpr const char* kWhatImageTakes =
    ": --image takes a vial image (python, javascript, shell), a root filesystem folder or tarball "
    "(.tar, .tar.gz, .tar.zst), a docker save archive or a Docker image name:tag";

// "rootfs.tar" is a valid Docker reference too, but a missing file is the likelier meaning.
bool looks_like_archive_name(const std::string& s) {
  for (const char* ext : {".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.xz", ".tar.bz2"}) {
    if (s.ends_with(ext)) return true;
  }
  return false;
}

}  // namespace

std::string to_string(SourceKind kind) {
  switch (kind) {
    case SourceKind::vial_image: return "vial-image";
    case SourceKind::directory: return "directory";
    case SourceKind::tarball: return "tarball";
    case SourceKind::docker_archive: return "docker-archive";
    case SourceKind::docker_image: return "docker-image";
  }
  return "unknown";
}

Source classify_source(const std::string& image) {
  if (image.empty()) {
    throw Error(ErrorKind::invalid_input, std::string("--image is empty") + kWhatImageTakes);
  }
  if (is_image_language(image)) return {SourceKind::vial_image, image, {}};
  std::error_code ec;
  const auto status = fs::status(image, ec);
  if (fs::is_directory(status)) return {SourceKind::directory, image, fs::path(image)};
  if (fs::is_regular_file(status)) {
    try {
      SourceKind kind = looks_like_docker_archive(image) ? SourceKind::docker_archive : SourceKind::tarball;
      return {kind, image, fs::path(image)};
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::invalid_input) throw;
      throw Error(ErrorKind::invalid_input, std::string(e.what()) + kWhatImageTakes);
    }
  }
  if (fs::exists(status)) {
    throw Error(ErrorKind::invalid_input, image + " is neither a directory nor a file: cannot pack it");
  }
  if (is_docker_reference(image) && !looks_like_archive_name(image)) return {SourceKind::docker_image, image, {}};
  throw Error(ErrorKind::not_found, image + " does not exist, and it is not a vial image (python, javascript, shell) "
                                            "or a Docker image reference (name:tag)");
}

}  // namespace vial::pack
