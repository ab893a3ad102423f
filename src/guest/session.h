// Notebook sessions: one persistent python interpreter per session name, so variables,
// imports and functions survive from one exec ("cell") to the next. The interpreter is
// forked from the python zygote when it is ready (else started cold), lives in a cgroup of
// its own with the usual limits, and gets each cell's stdin/stdout/stderr as fresh fds over
// its control socket (python_session.h has its side). One cell at a time per session.
//
// A cell that outlives its timeout is interrupted (SIGINT: KeyboardInterrupt, state kept);
// if it does not stop within kInterruptGraceMs the interpreter is killed, and the session's
// next cell starts a fresh one and is told (on its stderr) that the state was lost.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace vial::guest {

class Cgroups;
struct ExecConfig;

inline constexpr int64_t kInterruptGraceMs = 1000;

struct Session {
  std::string name;
  bool as_root = false;
  pid_t pid = -1;      // the interpreter; -1 when there is none
  int sock = -1;       // agent end of the control socket
  std::string cgroup;  // "" without cgroups
  uint32_t busy = 0;   // id of the exec running a cell, 0 when idle
  std::string lost;    // why the previous interpreter died; told to the next cell
};

class Sessions final {
 public:
  explicit Sessions(Cgroups* cgroups) : cgroups_(cgroups) {}
  ~Sessions();
  Sessions(const Sessions&) = delete;
  Sessions& operator=(const Sessions&) = delete;

  bool busy(const std::string& name) const;
  // The session's interpreter, started when it has none (`started` then says how: "warm"
  // or "cold"; "" for one already running). `note` gets why an earlier interpreter of this
  // session died, once. Null with `error` when it can't be started or as_root differs.
  Session* acquire(const std::string& name, bool as_root, const ExecConfig& cfg, std::string& started,
                   std::string& note, std::string& error);
  // Sends a cell (see python_session.h). False with `error` when the interpreter is gone.
  bool send_cell(Session& s, const std::string& file, const std::string& cwd,
                 const std::map<std::string, std::string>& env, const int stdio[3], std::string& error);
  // Kills the interpreter; the session's next cell starts fresh and is told `reason`.
  void kill(Session& s, const std::string& reason);
  // The agent reaped `pid`: if it was an interpreter, its session has lost its state.
  void on_reaped(pid_t pid, int status);

 private:
  void reset(Session& s, const std::string& reason);
  Cgroups* cgroups_;
  uint32_t next_cgroup_ = 0;
  std::map<std::string, std::unique_ptr<Session>> sessions_;
};

}  // namespace vial::guest
