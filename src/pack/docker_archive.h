// `docker save` archives (legacy and OCI layouts): their layers and image config.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "pack/manifest.h"

namespace vial::pack {

struct DockerImage {
  std::vector<std::filesystem::path> layers;  // bottom first, inside the unpacked folder
  PackDefaults defaults;                      // Entrypoint, Cmd, Env, WorkingDir of its config
  std::string architecture;                   // e.g. amd64; empty if the config has none
};

// True if the tar at `path` is laid out like a `docker save` archive (it holds a top-level
// manifest.json among docker's own files) rather than a root filesystem.
bool looks_like_docker_archive(const std::filesystem::path& path);

// Unpacks a `docker save` archive into `dir` (an existing empty directory) and reads its
// manifest.json and image config. Throws Error(invalid_input) naming what is wrong (several
// images in one archive, a missing layer, an image for another CPU architecture...).
DockerImage unpack_docker_archive(const std::filesystem::path& archive, const std::filesystem::path& dir);

// True if `s` is shaped like a Docker image reference: [host[:port]/]name[:tag][@sha256:...].
bool is_docker_reference(const std::string& s);

// Exports `reference` from the local Docker engine with `docker save -o out`. Throws
// Error(unavailable) when the docker CLI is missing or the export fails (quoting docker).
void docker_save(const std::string& reference, const std::filesystem::path& out, const std::filesystem::path& log);

}  // namespace vial::pack
