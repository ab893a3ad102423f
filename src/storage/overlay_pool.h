// Overlays made ahead of time, per base image, so a sandbox's disk is one rename away.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "storage/pristine_overlays.h"
#include "storage/storage_daemon.h"

namespace vial {

// Overlays kept ready per base image, as a share of the VMs that may run at once.
inline constexpr double kOverlayPoolSizeRatio = 0.5;

// acquire() was given a target that already exists (it never overwrites a file).
class OverlayTargetExists final : public StorageDaemonError {
 public:
  explicit OverlayTargetExists(const std::filesystem::path& target)
      : StorageDaemonError(target.string() + " already exists", {}, ErrorKind::invalid_input) {}
};

struct OverlayPoolOptions {
  // Where the pool's StorageDaemon keeps its socket; empty: run_dir().
  std::filesystem::path daemon_run_parent;
  // Where pristine overlays are cached; empty: overlays_dir()/pristine (shared with `vial run`).
  std::filesystem::path pristine_dir;
  // Refills start this long after the first take, so a burst of acquires drains the pool
  // without competing with its own refills, and the refill runs as one batch after it.
  std::chrono::milliseconds refill_delay{100};
};

// IMPORTANT: thread-safe; acquire() may be called from any number of threads. Pool refills
// and on-demand overlays are copies of a pristine overlay (pristine_overlays.h) made by the
// pool's StorageDaemon, which also serves bases the pool was not started with.
class OverlayPool final {
 public:
  // pool_size = int(max_concurrent_vms * kOverlayPoolSizeRatio); ≤ 0 disables pre-creation.
  OverlayPool(int max_concurrent_vms, std::filesystem::path pool_dir, OverlayPoolOptions options = {});
  OverlayPool(const OverlayPool&) = delete;
  OverlayPool& operator=(const OverlayPool&) = delete;
  ~OverlayPool();

  [[nodiscard]] int pool_size() const { return pool_size_; }

  // Starts the daemon; with pre-creation on, creates pool_dir and fills one queue per base
  // (keyed by its resolved absolute path) before returning, then refills in the background.
  // A bad base gets an empty queue (its acquires are made on demand and report the error).
  // If pool_dir can't be created, pre-creation is off for this run. Throws StorageDaemonError
  // "already started" when started twice.
  void start(const std::vector<std::filesystem::path>& base_images);
  // Stops refills and the daemon and removes pool_dir; completes even when removal fails.
  void stop() noexcept;

  // Puts a fresh overlay of `base` at `target`: true when it came from the pool (a rename),
  // false when made on demand. Throws OverlayTargetExists ("already exists") when target
  // exists, StorageDaemonError "Daemon must be started" before start().
  [[nodiscard]] bool acquire(const std::filesystem::path& base, const std::filesystem::path& target);

  // Ready overlays per base (resolved absolute path).
  [[nodiscard]] std::map<std::string, size_t> stats() const;
  [[nodiscard]] bool started() const;
  [[nodiscard]] bool daemon_enabled() const { return daemon_.started(); }
  // True while a background refill thread runs (pre-creation on).
  [[nodiscard]] bool refilling() const;

 private:
  static std::string key_of(const std::filesystem::path& base);
  // Makes one overlay in pool_dir for `key`; nullopt (and no file) on failure.
  std::optional<std::filesystem::path> make_pooled(const std::string& key);
  void fill(const std::string& key);
  void refill_loop();

  const int pool_size_;
  const std::filesystem::path pool_dir_;
  const OverlayPoolOptions options_;
  StorageDaemon daemon_;
  PristineOverlays pristine_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool started_ = false;
  bool stopping_ = false;
  bool precreate_ = false;
  std::optional<std::chrono::steady_clock::time_point> refill_due_;
  std::map<std::string, std::deque<std::filesystem::path>> queues_;
  std::thread refiller_;
  unsigned next_name_ = 0;
};

}  // namespace vial
