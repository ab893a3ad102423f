// One running user program, or one cell of a notebook session (session.h): spawning it
// (pipes, setsid, privileges, cgroup) and its state until the exit frame. The server owns the
// I/O loop; this module owns the process.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "guest/cgroup.h"
#include "guest/session.h"
#include "guest/zygote.h"

namespace vial::guest {

// The environment of a user program: the defaults (PATH, HOME, USER, LANG, TERM) with
// `overrides` applied, as K=V strings.
std::vector<std::string> program_env(const std::map<std::string, std::string>& overrides);
// Where a program without a cwd starts: the sandbox home, or /tmp where there is none.
std::string default_cwd();

// A program started cold (fork + exec). The child joins the cgroup, starts its own session
// (setsid), drops to the sandbox user when `drop`, and keeps only fds 0-2 (and 3 = ctl).
struct ColdChild {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH
  std::vector<std::string> env;   // K=V
  std::string cwd;
  int stdio[3] = {-1, -1, -1};    // stdin -1: /dev/null
  int ctl = -1;                   // >= 0: becomes the child's fd 3
  std::string procs;              // cgroup.procs to join ("": none)
  bool drop = false;
};
// Returns the child's pid once it has exec'd, or -1 with `error` (the step that failed). A
// missing program is not an error: the child prints "command not found" and exits 127.
pid_t start_cold(const ColdChild& child, std::string& error);

struct ExecConfig {
  bool drop_privileges = false;  // run user code as uid/gid 1000 (agent is root)
  std::string code_dir;          // where code files go: <code_dir>/exec-<id>/main.<ext>
  Cgroups* cgroups = nullptr;    // null or disabled: contain by process group only
  WarmInterpreters* warm = nullptr;  // null: every exec starts its interpreter cold
  Sessions* sessions = nullptr;      // null: execs with a session are refused
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

  // Signals every process of the exec (cgroup, process group and the main pid). For a
  // session's cell that is its interpreter's process group: SIGKILL ends the session.
  void signal_all(int sig);
  void kill_all() { signal_all(SIGKILL); }
  // After the main process exited, what still holds the output pipes: killed for a program,
  // left alone for a cell (its background work belongs to the session).
  void kill_leftovers();
  // Records the main process's exit status.
  void on_exit(int status, const rusage& ru, int64_t now);
  // True while the exec's deadline still has something to do; on_deadline does it: a
  // program is killed; a cell is interrupted first, and its interpreter killed
  // kInterruptGraceMs later if it has not stopped.
  bool deadline_pending() const;
  void on_deadline(int64_t now);
  // A cell's control socket is readable: reads its "done" report.
  void read_cell_report(int64_t now);
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
  int ctl_fd = -1;            // a cell's session control socket (not owned), -1 otherwise

 private:
  Exec() = default;
  static bool wants_warm(const agent::ExecRequest& req);
  bool start_cell(const agent::ExecRequest& req, const ExecConfig& cfg, const std::string& file,
                  const int stdio[3], std::string& error);
  bool spawn_warm(Zygote& z, const std::string& file, const std::string& cwd,
                  const std::vector<std::string>& env, int stdin_fd, int out_w, int err_w,
                  const std::string& procs, uint32_t timeout_ms);
  int status_ = 0;
  rusage ru_{};
  std::string cgroup_;
  std::string workdir_;
  Cgroups* cgroups_ = nullptr;
  Sessions* sessions_ = nullptr;
  Session* session_ = nullptr;  // set for a cell
  bool interrupted_ = false;    // a cell got SIGINT at its timeout
  bool hard_killed_ = false;    // ...and its interpreter was killed after the grace
};

}  // namespace vial::guest
