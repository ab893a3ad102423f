// Template snapshots: boot a guest once, let it warm up, save it; then start clones from the
// saved state in tens of milliseconds instead of a multi-second cold boot.
//
// A template is three frozen files: `memory` (the guest RAM: the VM ran with a shared
// memory-backend-file), `state` (device state, migrated with x-ignore-shared, so RAM is not
// copied: ~60 KB) and `disk.qcow2` (the template's overlay at the moment of the snapshot).
// A clone maps `memory` private (copy-on-write: clones share its page cache and never see
// each other's writes), loads `state` through an inherited fd, and gets its own overlay
// whose backing file is `disk.qcow2`, so disk and memory agree.
//
// A boot snapshot (VmConfig::park) is a template saved before the guest has read its root
// disk: a clone of it may be given any disk (a named machine's own), and finishes its boot
// when the host's reseed unparks it.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

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
  agent::ExecRequest warm_up;       // run once before saving (loads the interpreter's pages); not when parked
};

// The guest of a boot snapshot (boot.park) did not park: its agent predates parking. Boot it cold.
class ParkUnsupported final : public Error {
 public:
  explicit ParkUnsupported(const std::string& message) : Error(ErrorKind::unavailable, message) {}
};

struct Template {
  std::filesystem::path dir;
  std::filesystem::path memory;
  std::filesystem::path state;
  std::filesystem::path disk;
};

// Stable 64-bit FNV-1a of `text` as 16 hex digits (folder names must not change across builds).
std::string stable_hash(const std::string& text);

// A TemplateSpec::key part for everything a clone resumes besides `files` (the kernel,
// initramfs...): QEMU's build, vCPUs, guest CPU model and kernel command line. Memory and
// accelerator are in the template's folder name already.
std::string vm_shape_key(const VmConfig& config, const std::vector<std::filesystem::path>& files);

// The template for `spec` under `root` (e.g. $VIAL_HOME/templates), built first if missing.
// Concurrent callers (threads or processes) build it once: the others wait on a lock file.
// `run_root` holds the template VM's sockets and logs while it boots.
asio::awaitable<Template> ensure_template(const std::filesystem::path& root, const std::filesystem::path& run_root,
                                          const TemplateSpec& spec, std::chrono::milliseconds boot_timeout);

// Starts a clone of `tpl` and returns it running, before any contact with its agent.
// `config` carries the clone's own sockets, console and disk (an overlay backed by tpl.disk,
// or any disk for a boot snapshot); memory and incoming-migration settings are filled in.
asio::awaitable<std::unique_ptr<VmProcess>> restore_process(const Template& tpl, VmConfig config,
                                                            std::filesystem::path vm_dir,
                                                            std::vector<std::filesystem::path> owned_files,
                                                            std::chrono::milliseconds timeout);
// restore_process, then connects to the clone's agent (hello).
asio::awaitable<RunningVm> restore_clone(const Template& tpl, VmConfig config, std::filesystem::path vm_dir,
                                         std::vector<std::filesystem::path> owned_files,
                                         std::chrono::milliseconds timeout);

// Removes the folders under `root` whose names start with `prefix` (older templates of the same
// image, memory and accelerator), except `keep` and any being built.
void prune_templates(const std::filesystem::path& root, const std::string& prefix, const std::filesystem::path& keep);

}  // namespace vial
