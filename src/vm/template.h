// Template snapshots: boot a guest once, let it warm up, save it; then start clones from the
// saved state in tens of milliseconds instead of a multi-second cold boot.
//
// A template is three frozen files: `memory` (the guest RAM: the VM ran with a shared
// memory-backend-file), `state` (device state, migrated with x-ignore-shared, so RAM is not
// copied: ~60 KB) and `disk.qcow2` (the template's overlay at the moment of the snapshot).
// A clone maps `memory` private (copy-on-write: clones share its page cache and never see
// each other's writes), loads `state` through an inherited fd, and gets its own overlay
// whose backing file is `disk.qcow2`, so disk and memory agree.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "vm/guest_boot.h"
#include "vm/qemu_command.h"

namespace vial {

// Bump when the template layout or what a template contains changes.
inline constexpr int kTemplateFormat = 1;

struct TemplateSpec {
  std::string name;  // e.g. "python": first part of the folder name
  // Everything a clone's state depends on (image files, QEMU build, accelerator, memory...):
  // its hash names the folder, so a change of any input makes a new template.
  std::string key;
  VmConfig boot;           // kernel, initramfs, memory, accel, tsc; disk/sockets/memory filled in here
  std::filesystem::path base_disk;  // the image's rootfs.qcow2
  agent::ExecRequest warm_up;       // run once before saving (loads the interpreter's pages)
};

struct Template {
  std::filesystem::path dir;
  std::filesystem::path memory;
  std::filesystem::path state;
  std::filesystem::path disk;
};

// Stable 64-bit FNV-1a of `text` as 16 hex digits (folder names must not change across builds).
std::string stable_hash(const std::string& text);

// The template for `spec` under `root` (e.g. $VIAL_HOME/templates), built first if missing.
// Concurrent callers (threads or processes) build it once: the others wait on a lock file.
// `run_root` holds the template VM's sockets and logs while it boots.
asio::awaitable<Template> ensure_template(const std::filesystem::path& root, const std::filesystem::path& run_root,
                                          const TemplateSpec& spec, std::chrono::milliseconds boot_timeout);

// Starts a clone of `tpl`. `config` carries the clone's own sockets, console and overlay
// (whose backing file must be tpl.disk); memory and incoming-migration settings are filled in.
asio::awaitable<RunningVm> restore_clone(const Template& tpl, VmConfig config, std::filesystem::path vm_dir,
                                         std::vector<std::filesystem::path> owned_files,
                                         std::chrono::milliseconds deadline);

// Removes the folders under `root` whose names start with `prefix` (older templates of the same
// image, memory and accelerator), except `keep` and any being built.
void prune_templates(const std::filesystem::path& root, const std::string& prefix, const std::filesystem::path& keep);

}  // namespace vial
