// One qemu-storage-daemon with a private QMP socket, and qcow2 overlay creation through it
// (the reference way to make disks: QEMU itself writes the image). OverlayPool and the fast
// path in pristine_overlays.h build on it.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <mutex>

#include "storage/storage_error.h"

namespace vial {

// IMPORTANT: thread-safe. The QMP client runs on a private io_context in a thread the daemon
// owns; public calls block on it. One QMP conversation at a time: concurrent create_overlay
// calls from any number of threads queue on a mutex and all succeed.
class StorageDaemon final {
 public:
  // `run_parent`: where the private run dir (QMP socket, daemon log) is made; default run_dir().
  explicit StorageDaemon(std::filesystem::path run_parent = {});
  StorageDaemon(const StorageDaemon&) = delete;
  StorageDaemon& operator=(const StorageDaemon&) = delete;
  ~StorageDaemon();

  // Spawns the daemon and waits until it answers QMP. A second start() is a no-op.
  // Throws StorageDaemonError when the daemon can't run or never answers.
  void start();
  // Kills and reaps the daemon, removes its socket and run dir. Idempotent, never throws.
  void stop() noexcept;
  [[nodiscard]] bool started() const;
  // The daemon's pid, or 0 when not started.
  [[nodiscard]] pid_t pid() const;
  // The QMP socket, or empty when not started.
  [[nodiscard]] std::filesystem::path socket_path() const;

  // Creates `target`, a qcow2 overlay of the qcow2 image `base` (backing file: base's absolute
  // path, format qcow2, same virtual size) with blockdev-create jobs. Throws StorageDaemonError
  // ("not started", "Failed to get image info", "not qcow2 format", or QMP's refusal with its
  // error class); on failure no target is left behind.
  void create_overlay(const std::filesystem::path& base, const std::filesystem::path& target);

 private:
  class Running;
  std::filesystem::path run_parent_;
  mutable std::mutex mutex_;  // guards running_ and serializes QMP conversations
  std::unique_ptr<Running> running_;
};

}  // namespace vial
