// `vial pack create`: from any supported input to one verified-on-read pack file.
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "images/image_store.h"
#include "pack/docker_archive.h"
#include "pack/interrupt.h"
#include "pack/layers.h"
#include "pack/pack.h"
#include "pack/pack_writer.h"
#include "pack/rootfs_image.h"
#include "pack/source.h"
#include "util/error.h"
#include "util/paths.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

constexpr const char* kScratchPrefix = "pack-";

// A private folder under $VIAL_HOME/cache, removed with everything in it when it goes out of
// scope. Named pack-<pid>-XXXXXX so that a later run can remove one whose vial was killed.
class ScratchDir final {
 public:
  ScratchDir() {
    ensure_private_dir(cache_dir());
    std::string tmpl = (cache_dir() / (kScratchPrefix + std::to_string(::getpid()) + "-XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw_errno("cannot create a temp folder in " + cache_dir().string(), errno);
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Scratch folders of pack runs that died without cleaning up (SIGKILL, power loss).
void remove_stale_scratch() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cache_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kScratchPrefix)) continue;
    const int pid = std::atoi(name.c_str() + std::char_traits<char>::length(kScratchPrefix));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove_all(entry.path(), ec);
  }
}

// Kernel and initramfs for a foreign root filesystem: the default (python) image's, else
// any built image's (they all share them).
ImageInfo boot_image() {
  if (auto python = find_image("python")) return *python;
  for (const auto& image : list_images()) return image;
  return require_image("python");  // throws, saying how to build it
}

void say(const CreateOptions& options, const std::string& line) {
  if (options.progress) options.progress(line);
}

// Fills `root` from the source; returns the run defaults an image config gave.
PackDefaults fill_rootfs(const Source& source, const fs::path& scratch, const fs::path& root,
                         const CreateOptions& options) {
  switch (source.kind) {
    case SourceKind::directory:
      say(options, "copying " + source.path.string());
      run_tool({"cp", "-a", "--", (source.path / ".").string(), root.string()}, "copying " + source.path.string(),
               scratch / "cp.log", ErrorKind::invalid_input);
      return {};
    case SourceKind::tarball:
      say(options, "extracting " + source.path.string());
      extract_tar(source.path, root, source.path.string());
      return {};
    case SourceKind::docker_image: {
      say(options, "exporting " + source.ref + " with docker save");
      const fs::path saved = scratch / "docker-save.tar";
      docker_save(source.ref, saved, scratch / "docker.log");
      return fill_rootfs({SourceKind::docker_archive, source.ref, saved}, scratch, root, options);
    }
    case SourceKind::docker_archive: {
      say(options, "unpacking the docker save archive " + source.path.string());
      const fs::path unpacked = scratch / "docker";
      fs::create_directory(unpacked);
      DockerImage image = unpack_docker_archive(source.path, unpacked);
      for (size_t i = 0; i < image.layers.size(); ++i) {
        say(options, "applying layer " + std::to_string(i + 1) + "/" + std::to_string(image.layers.size()));
        apply_layer(image.layers[i], root, "layer " + std::to_string(i + 1) + " (" + image.layers[i].filename().string() + ")");
      }
      std::error_code ec;
      fs::remove_all(unpacked, ec);  // frees the space before the disk image is made
      return image.defaults;
    }
    case SourceKind::vial_image: break;
  }
  throw Error(ErrorKind::internal, "fill_rootfs: unexpected source kind");
}

}  // namespace

PackManifest create(const CreateOptions& options) {
  check_output_path(options.out, options.force);
  const Source source = classify_source(options.image);
  PackManifest manifest;
  manifest.created_at = utc_now_iso8601();
  manifest.created_by = "vial " VIAL_VERSION;
  manifest.source = {to_string(source.kind), source.ref};

  if (source.kind == SourceKind::vial_image) {
    ImageInfo image = require_image(source.ref);
    manifest.rootfs_virtual_size = image.manifest.value("rootfs_virtual_size", uint64_t{0});
    write_pack(manifest, {{kKernelPart, image.kernel}, {kInitramfsPart, image.initramfs}, {kRootfsPart, image.rootfs}},
               options.out, options.force, options.progress);
    return manifest;
  }

  ImageInfo base = boot_image();
  remove_stale_scratch();
  ScratchDir scratch;
  const fs::path root = scratch.path() / "rootfs";
  fs::create_directory(root);
  ::chmod(root.c_str(), 0755);
  manifest.defaults = fill_rootfs(source, scratch.path(), root, options);
  prepare_rootfs(root);
  const fs::path disk = scratch.path() / kRootfsPart;
  manifest.rootfs_virtual_size = build_rootfs_qcow2(root, scratch.path(), disk, options.progress);
  std::error_code ec;
  fs::remove_all(root, ec);
  write_pack(manifest, {{kKernelPart, base.kernel}, {kInitramfsPart, base.initramfs}, {kRootfsPart, disk}},
             options.out, options.force, options.progress);
  return manifest;
}

}  // namespace vial::pack
