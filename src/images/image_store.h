// Guest images on disk: $VIAL_HOME/images/<language>/{vmlinux,initramfs.img,rootfs.qcow2,manifest.json}.
// Building is delegated to images/build-image (mmdebstrap, mkfs.ext4, qemu-img), which
// also decides what is stale; this file finds, lists and removes what it built.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vial {

struct ImageInfo {
  std::string language;
  std::filesystem::path dir;
  std::filesystem::path kernel;
  std::filesystem::path initramfs;
  std::filesystem::path rootfs;
  nlohmann::json manifest;  // as written by build-image
  uint64_t disk_bytes = 0;  // sum of the image's files
};

// The languages vial has images for, in display order.
const std::vector<std::string>& image_languages();
bool is_image_language(const std::string& language);
// Throws Error(invalid_input) listing the choices when `language` is not one of them.
void check_image_language(const std::string& language);

// The image if all its files exist, else nothing.
std::optional<ImageInfo> find_image(const std::string& language);
// The image, or Error(not_found) saying which command builds it.
ImageInfo require_image(const std::string& language);
std::vector<ImageInfo> list_images();
// Removes the image directory; returns false if there was none.
bool remove_image(const std::string& language);

struct ImageBuildOptions {
  bool force = false;
};
// Runs images/build-image with vial's stderr (progress shows live). Returns its exit code.
int build_image(const std::string& language, const ImageBuildOptions& options);

}  // namespace vial
