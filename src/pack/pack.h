// Packs: one portable file (any name, e.g. agent.vial or agent.smolmachine) that a machine
// boots from. A zstd-compressed tar holding, in this order:
//   manifest.json   format version, arch, source, sha256 and size of each part, run defaults
//   vmlinux         the guest kernel (ELF, booted through PVH)
//   initramfs       vial-agent as /init plus the virtio modules
//   rootfs.qcow2    the root filesystem: ext4 in a qcow2 image
// See docs/packs.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "pack/manifest.h"

namespace vial::pack {

// Reads and verifies the whole pack: that it is a pack, its format version is one this vial
// reads, every part is present with the manifest's size and SHA-256. Returns the manifest.
// Throws Error: not_found (no such file), invalid_input (not a pack, made by a newer vial,
// damaged/truncated/tampered — the message names the part).
PackManifest read_manifest(const std::filesystem::path& pack_path);

// As read_manifest, and writes the parts as dest_dir/vmlinux, dest_dir/initramfs and
// dest_dir/rootfs.qcow2 (dest_dir is created if missing; existing parts are replaced). The
// parts appear only once all of them are verified: on any error none is left in dest_dir.
PackManifest extract(const std::filesystem::path& pack_path, const std::filesystem::path& dest_dir);

struct CreateOptions {
  // A vial image name (python, javascript, shell), a root filesystem directory, a rootfs
  // tarball (.tar, .tar.gz, .tar.zst...), a `docker save` archive, or a Docker image
  // reference (name:tag) exported with `docker save`.
  std::string image;
  std::filesystem::path out;
  bool force = false;  // replace an existing `out`
  // Called with one line per long step (for stderr); may be empty.
  std::function<void(const std::string&)> progress;
};

// Builds the pack in a temp dir under $VIAL_HOME/cache (removed on every path, also on an
// interrupt: see interrupt.h) and renames it into place, so `out` is never half written.
// Throws Error: invalid_input (bad image argument, `out` exists without force), not_found
// (no such image/file, base image not built), unavailable (docker or a tool missing),
// cancelled (interrupted), internal.
PackManifest create(const CreateOptions& options);

}  // namespace vial::pack
