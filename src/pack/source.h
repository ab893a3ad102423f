// What `vial pack create --image IMAGE` was given.
#pragma once

#include <filesystem>
#include <string>

namespace vial::pack {

enum class SourceKind { vial_image, directory, tarball, docker_archive, docker_image };

// As recorded in the manifest's source.kind: vial-image, directory, tarball, docker-archive,
// docker-image.
std::string to_string(SourceKind kind);

struct Source {
  SourceKind kind;
  std::string ref;              // the argument as given
  std::filesystem::path path;  // directory, tarball, docker-archive: the existing path
};

// A language name is a vial image (write ./python for a folder named python); then an existing
// directory or file; then anything shaped like a Docker reference (not like an archive name). Throws
// Error(invalid_input / not_found) saying what IMAGE may be.
Source classify_source(const std::string& image);

}  // namespace vial::pack
