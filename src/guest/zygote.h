// Warm interpreters: one fork server ("zygote") per language whose runtime is installed. A
// zygote has already imported its runtime and common modules; an exec asks it for a child
// instead of starting the interpreter from scratch.
//
// Agent <-> zygote: a SOCK_SEQPACKET socketpair (the zygote's end is its fd 3), one message
// per request:
//   zygote -> agent  "ready"                       once, after its imports
//   agent -> zygote  {"op":"exec","file","cwd","env":["K=V",...]}
//                    + SCM_RIGHTS [stdin, stdout, stderr, go]
//                    reply "pid N" or "err MESSAGE"
//   agent -> zygote  {"op":"session","cwd","env"} + SCM_RIGHTS [stdin, stdout, stderr, go, ctl]
//                    the same, for a notebook session interpreter (session.h) serving ctl
//   agent -> zygote  {"op":"reseed"}                reply "ok"
// The zygote double-forks: the program's process is reparented to the agent (PID 1, or a
// child subreaper in local mode), so the agent reaps it with wait4 and gets its rusage like
// any exec. The child calls setsid and then blocks reading `go` until the agent has put it
// in the exec's cgroup; only then does it run the user's code. EOF on `go` aborts it.
//
// Only python has a zygote. Node has no safe fork (libuv threads, V8 platform threads), so
// javascript execs keep exec'ing `node FILE`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vial::guest {

class Zygote final {
 public:
  Zygote(std::string language, std::vector<std::string> argv, bool drop_privileges,
         bool quiet);
  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;

  const std::string& language() const { return language_; }
  pid_t pid() const { return pid_; }
  // The interpreter binary exists.
  bool available() const;
  // Starts the zygote process unless it runs already (it reports ready asynchronously).
  bool start(std::string* error = nullptr);
  // True once the zygote said "ready" (checked without blocking). Restarts a dead zygote
  // when its backoff has passed.
  bool ready();
  // Forks a program (`file`) from the zygote, or a notebook session interpreter when ctl (its
  // control socket, see python_session.h) is >= 0. stdio: the child's fds 0-2. The child is
  // moved into the cgroup whose cgroup.procs is `procs` ("": none) before it runs anything.
  // Returns its pid, or -1 with `error` set; after a failure of the zygote itself it is
  // stopped (and restarted later), so the caller falls back to a cold start.
  pid_t spawn(const std::string& file, const std::string& cwd, const std::vector<std::string>& env,
              const int stdio[3], int ctl, const std::string& procs, std::string& error);
  // Re-seeds the zygote's own RNGs (its children re-seed after fork anyway).
  bool reseed(std::string& error);
  // The agent reaped `pid`: if it was this zygote, mark it dead. True if it was.
  bool on_reaped(pid_t pid);
  // Kills the zygote (restart happens on a later ready() after the backoff).
  void stop();

 private:
  bool request(const std::string& msg, const int* fds, int nfds, std::string& reply,
               std::string& error);

  std::string language_;
  std::vector<std::string> argv_;
  bool drop_ = false;
  bool quiet_ = true;
  pid_t pid_ = -1;
  int sock_ = -1;
  bool ready_ = false;
  int64_t restart_at_ms_ = 0;
  int64_t backoff_ms_ = 0;
};

// The set of zygotes of one agent.
class WarmInterpreters final {
 public:
  // Creates a zygote for each language whose runtime exists (under `root`, "" for /).
  WarmInterpreters(bool drop_privileges, bool quiet);
  void start_all();
  // A ready zygote for the language, or null (then exec cold).
  Zygote* get(const std::string& language);
  // Languages whose zygote is ready.
  std::vector<std::string> ready_languages();
  // Languages whose interpreter exists in this root filesystem (ready or starting).
  std::vector<std::string> available_languages() const;
  bool on_reaped(pid_t pid);
  // Re-seeds every ready zygote; false with `error` if one failed (it is restarted).
  bool reseed_all(std::string& error);
  void stop_all();

 private:
  std::vector<std::unique_ptr<Zygote>> zygotes_;
};

}  // namespace vial::guest
