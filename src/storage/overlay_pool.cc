#include "storage/overlay_pool.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "util/paths.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace vial {

OverlayPool::OverlayPool(int max_concurrent_vms, fs::path pool_dir, OverlayPoolOptions options)
    : pool_size_(static_cast<int>(max_concurrent_vms * kOverlayPoolSizeRatio)),
      pool_dir_(fs::absolute(pool_dir)),
      options_(std::move(options)),
      daemon_(options_.daemon_run_parent),
      pristine_(options_.pristine_dir.empty() ? overlays_dir() / "pristine" : options_.pristine_dir,
                [this](const fs::path& base, const fs::path& target) { daemon_.create_overlay(base, target); }) {}

OverlayPool::~OverlayPool() { stop(); }

std::string OverlayPool::key_of(const fs::path& base) { return fs::weakly_canonical(fs::absolute(base)).string(); }

std::optional<fs::path> OverlayPool::make_pooled(const std::string& key) {
  fs::path path;
  {
    std::lock_guard lock(mutex_);
    path = pool_dir_ / ("overlay-" + std::to_string(::getpid()) + "-" + std::to_string(next_name_++) + ".qcow2");
  }
  try {
    pristine_.create(key, path);
    return path;
  } catch (const Error&) {
    // A bad or missing base: its acquires go on demand, where the caller sees the error.
    return std::nullopt;
  }
}

void OverlayPool::fill(const std::string& key) {
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || queues_[key].size() >= static_cast<size_t>(pool_size_)) return;
    }
    auto made = make_pooled(key);
    if (!made) return;
    std::lock_guard lock(mutex_);
    queues_[key].push_back(std::move(*made));
  }
}

void OverlayPool::start(const std::vector<fs::path>& base_images) {
  {
    std::lock_guard lock(mutex_);
    if (started_) throw StorageDaemonError("overlay pool already started: stop() it first");
  }
  daemon_.start();  // always: on-demand creation needs it
  std::vector<std::string> keys;
  bool precreate = false;
  if (pool_size_ > 0) {
    std::error_code ec;
    fs::create_directories(pool_dir_, ec);
    precreate = !ec;  // e.g. permission denied: serve everything on demand
    if (precreate) {
      for (const auto& base : base_images) keys.push_back(key_of(base));
    }
  }
  {
    std::lock_guard lock(mutex_);
    started_ = true;
    stopping_ = false;
    precreate_ = precreate;
    refill_due_.reset();
    for (const auto& key : keys) queues_[key];
  }
  for (const auto& key : keys) fill(key);
  if (precreate) {
    std::lock_guard lock(mutex_);
    refiller_ = std::thread([this] { refill_loop(); });
  }
}

void OverlayPool::refill_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || refill_due_; });
    if (stopping_) return;
    if (!wake_.wait_until(lock, *refill_due_, [&] { return stopping_; })) {
      refill_due_.reset();
      std::vector<std::string> keys;
      for (const auto& [key, queue] : queues_) keys.push_back(key);
      lock.unlock();
      for (const auto& key : keys) fill(key);
      lock.lock();
    }
  }
}

void OverlayPool::stop() noexcept {
  bool precreate;
  {
    std::lock_guard lock(mutex_);
    if (!started_) return;
    stopping_ = true;
    precreate = precreate_;
    wake_.notify_all();
  }
  if (refiller_.joinable()) refiller_.join();
  daemon_.stop();
  if (precreate) {
    std::error_code ec;
    fs::remove_all(pool_dir_, ec);  // best effort: a leftover dir must not fail shutdown
  }
  std::lock_guard lock(mutex_);
  queues_.clear();
  started_ = false;
  precreate_ = false;
}

bool OverlayPool::acquire(const fs::path& base, const fs::path& target) {
  struct stat st {};
  if (::lstat(target.c_str(), &st) == 0) throw OverlayTargetExists(target);
  const std::string key = key_of(base);
  std::optional<fs::path> pooled;
  {
    std::lock_guard lock(mutex_);
    if (!started_) throw StorageDaemonError("Daemon must be started before acquire: call start() first");
    auto it = queues_.find(key);
    if (it != queues_.end() && !it->second.empty()) {
      pooled = std::move(it->second.front());
      it->second.pop_front();
    }
    if (it != queues_.end() && !refill_due_) {
      refill_due_ = Clock::now() + options_.refill_delay;
      wake_.notify_all();
    }
  }
  if (pooled) {
    if (::renameat2(AT_FDCWD, pooled->c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) == 0) return true;
    const int err = errno;
    ::unlink(pooled->c_str());  // e.g. EXDEV (target on another filesystem): make it on demand
    if (err == EEXIST) throw OverlayTargetExists(target);
  }
  pristine_.create(key, target);
  return false;
}

std::map<std::string, size_t> OverlayPool::stats() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, size_t> out;
  for (const auto& [key, queue] : queues_) out[key] = queue.size();
  return out;
}

bool OverlayPool::started() const {
  std::lock_guard lock(mutex_);
  return started_;
}

bool OverlayPool::refilling() const {
  std::lock_guard lock(mutex_);
  return refiller_.joinable() && started_;
}

}  // namespace vial
