#include "guest/session.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "guest/cgroup.h"
#include "guest/exec.h"
#include "guest/python_session.h"
#include "guest/util.h"
#include "guest/zygote.h"
#include "util/unique_fd.h"

namespace vial::guest {

namespace {
// Each interpreter costs guest memory; a runaway host can't make more than this alive.
constexpr size_t kMaxSessions = 32;
}  // namespace

Sessions::~Sessions() {
  for (auto& [name, s] : sessions_) kill(*s, "the agent stopped");
}

bool Sessions::busy(const std::string& name) const {
  auto it = sessions_.find(name);
  return it != sessions_.end() && it->second->busy != 0;
}

Session* Sessions::acquire(const std::string& name, bool as_root, const ExecConfig& cfg, std::string& started,
                           std::string& note, std::string& error) {
  started.clear();
  auto it = sessions_.find(name);
  if (it == sessions_.end()) {
    if (sessions_.size() >= kMaxSessions) {  // forget one whose interpreter is gone
      std::erase_if(sessions_, [](const auto& entry) { return entry.second->pid <= 0 && entry.second->busy == 0; });
    }
    if (sessions_.size() >= kMaxSessions) {
      error = "too many sessions (" + std::to_string(kMaxSessions) + ") in this VM";
      return nullptr;
    }
    it = sessions_.emplace(name, std::make_unique<Session>()).first;
    it->second->name = name;
  }
  Session& s = *it->second;
  if (s.pid > 0) {
    if (s.as_root == as_root) return &s;
    error = "session " + name + " runs as " + (s.as_root ? "root" : "the sandbox user") +
            ": its execs can't switch user (as_root)";
    return nullptr;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    error = std::string("socketpair: ") + strerror(errno);
    return nullptr;
  }
  UniqueFd mine(sv[0]), theirs(sv[1]);
  UniqueFd null_fd(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null_fd.valid()) {
    error = std::string("open /dev/null: ") + strerror(errno);
    return nullptr;
  }
  if (cgroups_ && cgroups_->enabled()) s.cgroup = cgroups_->create("session-" + std::to_string(++next_cgroup_));
  const std::string procs = s.cgroup.empty() ? "" : s.cgroup + "/cgroup.procs";
  const std::vector<std::string> env = program_env({});
  const std::string cwd = default_cwd();
  const int stdio[3] = {null_fd.get(), null_fd.get(), null_fd.get()};
  pid_t pid = -1;
  // The zygote runs as the sandbox user: a root session starts cold.
  if (!as_root && cfg.warm) {
    if (Zygote* z = cfg.warm->get("python")) {
      std::string warm_error;
      pid = z->spawn("", cwd, env, stdio, theirs.get(), procs, warm_error);
      if (pid > 0) started = "warm";
    }
  }
  if (pid <= 0) {
    ColdChild child;
    child.argv = {"/usr/bin/python3", "-u", "-c", std::string(kPythonCommon) + kPythonSessionMain};
    child.env = env;
    child.cwd = cwd;
    child.stdio[1] = child.stdio[2] = null_fd.get();
    child.ctl = theirs.get();
    child.procs = procs;
    child.drop = cfg.drop_privileges && !as_root;
    pid = start_cold(child, error);
    started = "cold";
  }
  if (pid <= 0) {
    reset(s, s.lost);
    return nullptr;
  }
  s.pid = pid;
  s.sock = mine.release();
  s.as_root = as_root;
  note = std::exchange(s.lost, "");
  return &s;
}

bool Sessions::send_cell(Session& s, const std::string& file, const std::string& cwd,
                         const std::map<std::string, std::string>& env, const int stdio[3], std::string& error) {
  std::string msg = file + '\0' + cwd;  // paths and env hold no NUL (the host checks env)
  for (const auto& [k, v] : env) msg += '\0' + k + "=" + v;
  if (send_with_fds(s.sock, msg, stdio, 3)) return true;
  error = "session " + s.name + ": the interpreter is gone (" + strerror(errno) + ")";
  kill(s, "its interpreter stopped answering");
  return false;
}

void Sessions::kill(Session& s, const std::string& reason) {
  if (!s.cgroup.empty()) Cgroups::kill_all(s.cgroup);
  if (s.pid > 0) ::kill(s.pid, SIGKILL);  // the server's reap loop collects it
  reset(s, reason);
}

void Sessions::on_reaped(pid_t pid, int status) {
  for (auto& [name, s] : sessions_) {
    if (s->pid != pid) continue;
    std::string how = WIFEXITED(status) ? "exited with code " + std::to_string(WEXITSTATUS(status))
                                        : "was killed by signal " + std::to_string(WTERMSIG(status));
    reset(*s, "its interpreter " + how);
    return;
  }
}

void Sessions::reset(Session& s, const std::string& reason) {
  if (s.sock >= 0) close(s.sock);
  s.sock = -1;
  // Removing the cgroup also ends the background processes the session's cells started.
  if (!s.cgroup.empty() && cgroups_) cgroups_->remove(s.cgroup);
  s.cgroup.clear();
  s.pid = -1;
  s.lost = reason;
}

}  // namespace vial::guest
