// Writing a pack file: manifest first, then the parts, through zstd, atomically.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "pack/manifest.h"

namespace vial::pack {

struct PartFile {
  std::string name;  // one of part_names()
  std::filesystem::path path;
};

// Fills manifest.parts from `files` (size and SHA-256, in part_names() order), then writes
// the pack to a temp file next to `out` and renames it into place (with `force`, replacing
// an existing `out`; without, Error(invalid_input) if `out` exists). Returns the pack's size.
uint64_t write_pack(PackManifest& manifest, const std::vector<PartFile>& files, const std::filesystem::path& out,
                    bool force, const std::function<void(const std::string&)>& progress);

// Error(invalid_input) if `out` exists and force is off, or its folder is missing.
void check_output_path(const std::filesystem::path& out, bool force);

}  // namespace vial::pack
