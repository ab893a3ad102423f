// cgroup v2 containment for execs: one child cgroup per exec under /sys/fs/cgroup/vial, so a
// timeout or kill reaches every descendant (even ones that left the process group) and a fork
// or memory bomb is bounded. Only used when cgroup2 is mounted and writable (PID-1 mode).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vial::guest {

class Cgroups final {
 public:
  // Prepares /sys/fs/cgroup/vial with +pids +memory delegated. False: fall back to pgroups.
  bool init(const std::string& root = "/sys/fs/cgroup");
  bool enabled() const { return enabled_; }

  // Creates the cgroup of one exec (or of a named group such as a notebook session, with
  // the same limits); returns its path or "" on failure.
  std::string create(uint32_t id) { return create("exec-" + std::to_string(id)); }
  std::string create(const std::string& leaf);
  // SIGKILLs everything in the cgroup (cgroup.kill, else per-pid).
  static void kill_all(const std::string& path);
  // Sends one signal to every process of the cgroup.
  static void signal_all(const std::string& path, int sig);
  // Removes the cgroup; if processes linger (not reaped yet), retries on later calls.
  void remove(const std::string& path);
  void retry_removals();

 private:
  bool enabled_ = false;
  std::string base_;
  uint64_t memory_max_ = 0;
  std::vector<std::string> pending_;
};

}  // namespace vial::guest
