// What the storage layer needs to know about a base image, read from its qcow2 header
// directly: one open + pread instead of a `qemu-img info` process per overlay.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>

namespace vial {

struct BaseImage {
  std::filesystem::path path;  // absolute, lexically normal, symlinks kept (the backing file name)
  uint64_t virtual_size = 0;   // bytes, from the qcow2 header
  // Identity of the file's current contents: a base rewritten or replaced changes one of these.
  dev_t dev = 0;
  ino_t ino = 0;
  off_t file_size = 0;
  int64_t mtime_ns = 0;
};

// Reads `base`'s qcow2 header (following symlinks). Throws StorageDaemonError whose message
// contains "Failed to get image info" when it can't be read, "not qcow2 format" when it
// isn't a qcow2 image.
[[nodiscard]] BaseImage inspect_base_image(const std::filesystem::path& base);

}  // namespace vial
