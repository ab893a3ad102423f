// One running user program: spawning it (pipes, session, privileges, cgroup) and its state
// until the exit frame. The server owns the I/O loop; this module owns the process.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "guest/cgroup.h"
#include "guest/zygote.h"

namespace vial::guest {

struct ExecConfig {
  bool drop_privileges = false;  // run user code as uid/gid 1000 (agent is root)
  std::string code_dir;          // where code files go: <code_dir>/exec-<id>/main.<ext>
  Cgroups* cgroups = nullptr;    // null or disabled: contain by process group only
  WarmInterpreters* warm = nullptr;  // null: every exec starts its interpreter cold
  bool system = false;           // PID-1 mode: reseed may touch the kernel RNG and clock
};

class Exec final {
 public:
  // Starts the program. On failure returns null and sets `error` (for a spawn_failed frame).
  static std::unique_ptr<Exec> spawn(uint32_t id, const agent::ExecRequest& req,
                                     const ExecConfig& cfg, std::string& error);
  ~Exec();
  Exec(const Exec&) = delete;
  Exec& operator=(const Exec&) = delete;

  // Signals every process of the exec (cgroup, process group and the main pid).
  void signal_all(int sig);
  void kill_all() { signal_all(SIGKILL); }
  // Records the main process's exit status.
  void on_exit(int status, const rusage& ru, int64_t now);
  bool done() const { return exited_ && out_fd < 0 && err_fd < 0; }
  agent::ExecResult result() const;
  void close_stdin();

  uint32_t id = 0;
  pid_t pid = -1;
  int out_fd = -1, err_fd = -1, in_fd = -1;
  std::string stdin_buf;      // bytes for the program's stdin; written up to stdin_off
  size_t stdin_off = 0;
  bool stdin_eof = false;     // close stdin once stdin_buf is written
  uint64_t out_limit = 0, err_limit = 0;
  uint64_t out_bytes = 0, err_bytes = 0;  // bytes read from each pipe
  int64_t start_ms = 0, deadline_ms = 0;
  int64_t grace_ms = -1;      // main exited but pipes still open: kill the rest at this time
  bool timed_out = false;
  bool exited_ = false;
  bool warm = false;          // forked from a warm interpreter
  int64_t end_ms = 0;

 private:
  Exec() = default;
  static bool wants_warm(const agent::ExecRequest& req);
  bool spawn_warm(Zygote& z, const std::string& file, const std::string& cwd,
                  const std::vector<std::string>& env, int stdin_fd, int out_w, int err_w,
                  const std::string& procs, uint32_t timeout_ms);
  int status_ = 0;
  rusage ru_{};
  std::string cgroup_;
  std::string workdir_;
  Cgroups* cgroups_ = nullptr;
};

}  // namespace vial::guest
