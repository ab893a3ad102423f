#include "guest/cgroup.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "guest/util.h"

namespace vial::guest {

namespace {
constexpr uint64_t kAgentReserve = 48ull << 20;  // memory kept for the agent and kernel
constexpr long kCgroup2Magic = 0x63677270;

uint64_t mem_total_bytes() {
  std::string info;
  if (!read_file("/proc/meminfo", info)) return 0;
  auto pos = info.find("MemTotal:");
  if (pos == std::string::npos) return 0;
  return std::strtoull(info.c_str() + pos + 9, nullptr, 10) * 1024;
}
}  // namespace

bool Cgroups::init(const std::string& root) {
  struct statfs sf{};
  if (statfs(root.c_str(), &sf) != 0 || static_cast<long>(sf.f_type) != kCgroup2Magic) return false;
  base_ = root + "/vial";
  if (mkdir(base_.c_str(), 0755) != 0 && errno != EEXIST) return false;
  // Controllers must be enabled at each level down to the exec cgroups.
  if (write_file(root + "/cgroup.subtree_control", "+pids +memory") != 0) return false;
  if (write_file(base_ + "/cgroup.subtree_control", "+pids +memory") != 0) return false;
  uint64_t total = mem_total_bytes();
  memory_max_ = total > kAgentReserve * 2 ? total - kAgentReserve : 0;
  enabled_ = true;
  return true;
}

std::string Cgroups::create(const std::string& leaf) {
  if (!enabled_) return {};
  std::string path = base_ + "/" + leaf;
  // Don't let a pending removal of an earlier exec with this id delete the new cgroup.
  std::erase(pending_, path);
  if (mkdir(path.c_str(), 0755) != 0) {
    if (errno != EEXIST) return {};
    // A stale cgroup of an earlier exec with this id: empty it first.
    kill_all(path);
  }
  write_file(path + "/pids.max", "512");
  if (memory_max_ > 0) {
    write_file(path + "/memory.max", std::to_string(memory_max_));
    write_file(path + "/memory.swap.max", "0");
    // An OOM kill takes the whole exec, not a random member of it.
    write_file(path + "/memory.oom.group", "1");
  }
  return path;
}

void Cgroups::signal_all(const std::string& path, int sig) {
  std::string procs;
  if (!read_file(path + "/cgroup.procs", procs)) return;
  std::istringstream in(procs);
  pid_t pid = 0;
  while (in >> pid)
    if (pid > 1) ::kill(pid, sig);
}

void Cgroups::kill_all(const std::string& path) {
  if (path.empty()) return;
  if (write_file(path + "/cgroup.kill", "1") != 0) {
    // Older kernels: freeze-free best effort, repeated to catch forks in flight.
    for (int i = 0; i < 3; ++i) signal_all(path, SIGKILL);
  }
}

void Cgroups::remove(const std::string& path) {
  if (path.empty()) return;
  if (rmdir(path.c_str()) != 0 && errno == EBUSY) {
    kill_all(path);
    pending_.push_back(path);
  }
}

void Cgroups::retry_removals() {
  for (size_t i = 0; i < pending_.size();) {
    if (rmdir(pending_[i].c_str()) == 0 || errno != EBUSY) {
      pending_[i] = pending_.back();
      pending_.pop_back();
    } else {
      ++i;
    }
  }
}

}  // namespace vial::guest
