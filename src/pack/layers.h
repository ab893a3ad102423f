// Unpacking tar archives into a root filesystem tree: plain rootfs tarballs, `docker save`
// archives and image layers (with whiteouts). IMPORTANT: archives are untrusted; no entry may
// land outside the root (no "..", no writing through symlinks, hard links resolved inside it).
#pragma once

#include <filesystem>
#include <string>

namespace vial::pack {

// Extracts every entry of `tar` (plain or compressed) under `root` (an existing directory),
// keeping owners (when run as root), modes, times and xattrs. Entries named like whiteouts are
// extracted as ordinary files. `what` names the archive in errors.
void extract_tar(const std::filesystem::path& tar, const std::filesystem::path& root, const std::string& what);

// Applies one image layer onto `root`: first its whiteouts delete what lower layers put there
// (".wh.NAME" deletes NAME, ".wh..wh..opq" empties its directory), then its other entries are
// extracted; entries of this layer survive its own whiteouts.
void apply_layer(const std::filesystem::path& tar, const std::filesystem::path& root, const std::string& what);

}  // namespace vial::pack
