#include "images/image_store.h"

#include <algorithm>
#include <fstream>

#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"

namespace fs = std::filesystem;

namespace vial {

const std::vector<std::string>& image_languages() {
  static const std::vector<std::string> languages = {"python", "javascript", "shell"};
  return languages;
}

bool is_image_language(const std::string& language) {
  const auto& l = image_languages();
  return std::find(l.begin(), l.end(), language) != l.end();
}

void check_image_language(const std::string& language) {
  if (!is_image_language(language)) {
    throw Error(ErrorKind::invalid_input, "unknown language '" + language + "' (choose python, javascript or shell)");
  }
}

std::optional<ImageInfo> find_image(const std::string& language) {
  ImageInfo info;
  info.language = language;
  // Canonical: overlays and templates record these paths as backing files, and must not
  // depend on a symlink (e.g. a test's VIAL_HOME linking to a shared images/) staying put.
  std::error_code canon_ec;
  info.dir = fs::weakly_canonical(images_dir() / language, canon_ec);
  info.kernel = info.dir / "vmlinux";
  info.initramfs = info.dir / "initramfs.img";
  info.rootfs = info.dir / "rootfs.qcow2";
  fs::path manifest = info.dir / "manifest.json";
  std::error_code ec;
  for (const auto& f : {info.kernel, info.initramfs, info.rootfs, manifest}) {
    if (!fs::is_regular_file(f, ec)) return std::nullopt;
    info.disk_bytes += fs::file_size(f, ec);
  }
  std::ifstream in(manifest);
  info.manifest = nlohmann::json::parse(in, nullptr, false);
  if (!info.manifest.is_object()) return std::nullopt;
  return info;
}

ImageInfo require_image(const std::string& language) {
  check_image_language(language);
  if (auto info = find_image(language)) return *info;
  throw Error(ErrorKind::not_found, "the " + language + " image is not built yet: run `vial image build " +
                                        language + "` (or `make demo`), then try again");
}

std::vector<ImageInfo> list_images() {
  std::vector<ImageInfo> out;
  for (const auto& lang : image_languages()) {
    if (auto info = find_image(lang)) out.push_back(std::move(*info));
  }
  return out;
}

bool remove_image(const std::string& language) {
  check_image_language(language);
  std::error_code ec;
  fs::path dir = images_dir() / language;
  if (!fs::exists(dir, ec)) return false;
  fs::remove_all(dir, ec);
  if (ec) throw Error(ErrorKind::internal, "cannot remove " + dir.string() + ": " + ec.message());
  return true;
}

int build_image(const std::string& language, const ImageBuildOptions& options) {
  check_image_language(language);
  ensure_private_dir(images_dir());
  std::vector<std::string> argv = {image_build_script().string(), "--lang", language,
                                   "--out", (images_dir() / language).string(),
                                   "--agent", agent_binary().string(),
                                   "--cache", cache_dir().string()};
  if (options.force) argv.push_back("--force");
  SpawnOptions opts;
  opts.inherit_stdio = true;
  opts.new_process_group = false;  // Ctrl-C reaches the build too
  Child child = Child::spawn(argv, opts);
  return shell_exit_code(child.wait());
}

}  // namespace vial
