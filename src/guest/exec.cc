#include "guest/exec.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "guest/util.h"
#include "util/unique_fd.h"

extern char** environ;

namespace vial::guest {

namespace {

constexpr uid_t kSandboxUid = 1000;
constexpr gid_t kSandboxGid = 1000;

struct Lang {
  const char* name;
  const char* file;
  std::vector<std::string> argv;
};

const Lang* find_lang(const std::string& name) {
  static const Lang langs[] = {
      {"python", "main.py", {"/usr/bin/python3", "-u"}},
      {"javascript", "main.js", {"/usr/bin/node"}},
      {"shell", "main.sh", {"/bin/bash"}},
  };
  for (const auto& l : langs)
    if (name == l.name) return &l;
  return nullptr;
}

bool is_dir(const std::string& p) {
  struct stat st{};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Child-side failure report: "<stage>: <strerror>" into the CLOEXEC error pipe, then exit.
[[noreturn]] void child_fail(int errfd, const char* stage) {
  int e = errno;
  char msg[256];
  int n = snprintf(msg, sizeof msg, "%s: %s", stage, strerror(e));
  if (n > 0) {
    [[maybe_unused]] ssize_t w = write(errfd, msg, static_cast<size_t>(std::min(n, 255)));
  }
  _exit(126);
}

void write_all_raw(int fd, const char* s) {
  [[maybe_unused]] ssize_t w = write(fd, s, strlen(s));
}

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

}  // namespace

std::vector<std::string> program_env(const std::map<std::string, std::string>& overrides) {
  std::map<std::string, std::string> env = {
      {"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"HOME", "/home/sandbox"},
      {"USER", "sandbox"}, {"LANG", "C.UTF-8"}, {"TERM", "dumb"}};
  for (const auto& [k, v] : overrides) env[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::string default_cwd() { return is_dir("/home/sandbox") ? "/home/sandbox" : "/tmp"; }

pid_t start_cold(const ColdChild& c, std::string& error) {
  // Everything the child needs is prepared here: after fork it only makes syscalls.
  std::vector<std::string> argv = c.argv, env = c.env;
  std::vector<char*> envp, argvp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (auto& s : argv) argvp.push_back(s.data());
  argvp.push_back(nullptr);
  std::string not_found = "vial-agent: " + argv[0] + ": command not found\n";
  std::string no_perm = "vial-agent: " + argv[0] + ": permission denied\n";
  int rep[2] = {-1, -1};
  if (pipe2(rep, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + strerror(errno);
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    error = std::string("fork: ") + strerror(errno);
    close_fd(rep[0]);
    close_fd(rep[1]);
    return -1;
  }
  if (pid == 0) {
    int rfd = rep[1];
    // Join the cgroup first, so every descendant is contained from the start.
    if (!c.procs.empty()) {
      int fd = open(c.procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, "0", 1) != 1) child_fail(rfd, "join cgroup");
      close(fd);
    }
    if (setsid() < 0) child_fail(rfd, "setsid");
    // Dispositions set to ignore and the blocked mask survive exec: reset them.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
    int stdin_fd = c.stdio[0] >= 0 ? c.stdio[0] : open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (stdin_fd < 0) child_fail(rfd, "open /dev/null");
    // All fds passed are >= 3 (main() keeps 0-2 occupied), so dup2 can't clobber a source.
    if (dup2(stdin_fd, 0) < 0 || dup2(c.stdio[1], 1) < 0 || dup2(c.stdio[2], 2) < 0)
      child_fail(rfd, "dup2");
    int first_closed = 3;
    if (c.ctl >= 0) {
      if (rfd == 3 && (rfd = fcntl(rfd, F_DUPFD_CLOEXEC, 4)) < 0) child_fail(3, "dup");
      if (c.ctl == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(c.ctl, 3) < 0) child_fail(rfd, "dup2");
      first_closed = 4;
    }
    // Close everything else except the report pipe (CLOEXEC, closes on exec).
    if (rfd > first_closed)
      syscall(SYS_close_range, static_cast<unsigned>(first_closed), static_cast<unsigned>(rfd - 1), 0u);
    syscall(SYS_close_range, static_cast<unsigned>(rfd + 1), ~0u, 0u);
    make_child_expendable();
    if (c.drop) {
      if (setgroups(0, nullptr) != 0) child_fail(rfd, "setgroups");
      if (setgid(kSandboxGid) != 0) child_fail(rfd, "setgid");
      if (setuid(kSandboxUid) != 0) child_fail(rfd, "setuid");
    }
    if (chdir(c.cwd.c_str()) != 0) child_fail(rfd, "chdir");
    environ = envp.data();
    execvp(argvp[0], argvp.data());
    // Like a shell: a missing command is exit 127 with a message, not a protocol error.
    if (errno == ENOENT || errno == ENOTDIR) {
      write_all_raw(2, not_found.c_str());
      _exit(127);
    }
    if (errno == EACCES) {
      write_all_raw(2, no_perm.c_str());
      _exit(126);
    }
    child_fail(rfd, "exec");
  }
  close_fd(rep[1]);
  // The report pipe closes on a successful exec; a message means the child gave up.
  char msg[256];
  ssize_t n;
  do {
    n = read(rep[0], msg, sizeof msg);
  } while (n < 0 && errno == EINTR);
  close_fd(rep[0]);
  if (n > 0) {
    error = std::string(msg, static_cast<size_t>(n));
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return -1;
  }
  return pid;
}

std::unique_ptr<Exec> Exec::spawn(uint32_t id, const agent::ExecRequest& req,
                                  const ExecConfig& cfg, std::string& error) {
  std::unique_ptr<Exec> ex(new Exec());
  ex->id = id;
  ex->cgroups_ = cfg.cgroups;
  ex->out_limit = req.stdout_limit;
  ex->err_limit = req.stderr_limit;

  std::string cwd = req.cwd;
  if (cwd.empty()) {
    cwd = default_cwd();
  } else if (!is_dir(cwd)) {
    error = "cwd " + cwd + " does not exist or is not a directory";
    return nullptr;
  }

  std::vector<std::string> argv = req.argv;
  std::string code_file;
  if (argv.empty()) {
    const Lang* lang = find_lang(req.language);
    if (!lang) {
      error = "unknown language " + req.language;
      return nullptr;
    }
    ex->workdir_ = cfg.code_dir + "/exec-" + std::to_string(id);
    remove_tree(ex->workdir_);
    mkdir(cfg.code_dir.c_str(), 0755);
    if (mkdir(ex->workdir_.c_str(), 0755) != 0) {
      error = "mkdir " + ex->workdir_ + ": " + strerror(errno);
      return nullptr;
    }
    chmod(ex->workdir_.c_str(), 0755);  // umask must not hide the code from the sandbox user
    std::string file = ex->workdir_ + "/" + lang->file;
    if (int e = write_file(file, req.code, true, 0644); e != 0) {
      error = "write " + file + ": " + strerror(e);
      return nullptr;  // destructor removes workdir_
    }
    chmod(file.c_str(), 0644);
    code_file = file;
    argv = lang->argv;
    argv.push_back(file);
  }

  int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1};
  auto close_all = [&] {
    for (int* p : {out, err, in}) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
  };
  if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || (req.stdin_open && pipe2(in, O_CLOEXEC))) {
    error = std::string("pipe: ") + strerror(errno);
    close_all();
    return nullptr;
  }
  // The program got its ends: keep ours, non-blocking.
  auto adopt_pipes = [&] {
    close_fd(out[1]);
    close_fd(err[1]);
    close_fd(in[0]);
    ex->out_fd = out[0];
    ex->err_fd = err[0];
    ex->in_fd = in[1];
    set_nonblock(ex->out_fd);
    set_nonblock(ex->err_fd);
    if (ex->in_fd >= 0) set_nonblock(ex->in_fd);
  };

  if (!req.session.empty()) {
    const int stdio[3] = {req.stdin_open ? in[0] : -1, out[1], err[1]};
    if (!ex->start_cell(req, cfg, code_file, stdio, error)) {
      close_all();
      return nullptr;
    }
    adopt_pipes();
    return ex;
  }

  const std::vector<std::string> env = program_env(req.env);
  if (cfg.cgroups && cfg.cgroups->enabled()) ex->cgroup_ = cfg.cgroups->create(id);
  std::string procs = ex->cgroup_.empty() ? "" : ex->cgroup_ + "/cgroup.procs";

  // Warm path: fork the program from the language's zygote. Any failure falls back to the
  // cold path below (the zygote restarts by itself later).
  if (!code_file.empty() && cfg.warm && wants_warm(req)) {
    if (Zygote* z = cfg.warm->get(req.language)) {
      if (ex->spawn_warm(*z, code_file, cwd, env, req.stdin_open ? in[0] : -1, out[1], err[1], procs,
                         req.timeout_ms)) {
        adopt_pipes();
        return ex;
      }
    }
  }

  ColdChild child;
  child.argv = std::move(argv);
  child.env = env;
  child.cwd = cwd;
  child.stdio[0] = req.stdin_open ? in[0] : -1;
  child.stdio[1] = out[1];
  child.stdio[2] = err[1];
  child.procs = procs;
  // as_root keeps the agent's root: root of this VM only, which is the isolation boundary.
  child.drop = cfg.drop_privileges && !req.as_root;
  pid_t pid = start_cold(child, error);
  if (pid < 0) {
    close_all();
    return nullptr;
  }
  ex->pid = pid;
  ex->start_ms = now_ms();
  ex->deadline_ms = ex->start_ms + req.timeout_ms;
  adopt_pipes();
  return ex;
}

bool Exec::start_cell(const agent::ExecRequest& req, const ExecConfig& cfg, const std::string& file,
                      const int stdio[3], std::string& error) {
  if (!cfg.sessions) {
    error = "this agent has no notebook sessions";
    return false;
  }
  std::string started, note;
  Session* s = cfg.sessions->acquire(req.session, req.as_root, cfg, started, note, error);
  if (!s) return false;
  if (!note.empty()) {
    std::string msg = "vial: this session's interpreter was restarted (" + note +
                      "): variables, imports and functions of earlier execs are gone\n";
    write_all_raw(stdio[2], msg.c_str());
  }
  UniqueFd null_fd;
  int fds[3] = {stdio[0], stdio[1], stdio[2]};
  if (fds[0] < 0) {
    null_fd = UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    fds[0] = null_fd.get();
  }
  if (!cfg.sessions->send_cell(*s, file, req.cwd, req.env, fds, error)) return false;
  sessions_ = cfg.sessions;
  session_ = s;
  s->busy = id;
  pid = s->pid;  // the reaper hands the cell its interpreter's death
  ctl_fd = s->sock;
  warm = started != "cold";
  start_ms = now_ms();
  deadline_ms = start_ms + req.timeout_ms;
  return true;
}

void Exec::read_cell_report(int64_t now) {
  char buf[128];
  ssize_t n = recv(ctl_fd, buf, sizeof buf - 1, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  ctl_fd = -1;  // one report per cell; EOF means the interpreter died (the reaper reports it)
  if (n <= 0) return;
  buf[n] = '\0';
  int code = 0;
  long cpu_ms = 0;
  if (std::sscanf(buf, "done %d %ld", &code, &cpu_ms) != 2) {
    sessions_->kill(*session_, "its interpreter sent a bad report");
    return;
  }
  rusage ru{};
  ru.ru_utime.tv_sec = cpu_ms / 1000;
  ru.ru_utime.tv_usec = (cpu_ms % 1000) * 1000;
  // The interpreter's peak RSS so far (VmHWM), the closest a long-lived process has.
  std::string status;
  if (read_file("/proc/" + std::to_string(pid) + "/status", status)) {
    if (size_t at = status.find("VmHWM:"); at != std::string::npos) ru.ru_maxrss = std::atol(status.c_str() + at + 6);
  }
  on_exit(W_EXITCODE(code & 0xff, 0), ru, now);
}

bool Exec::deadline_pending() const {
  if (exited_) return false;
  return session_ ? !hard_killed_ : !timed_out;
}

void Exec::on_deadline(int64_t now) {
  timed_out = true;
  if (!session_) {
    kill_all();
    return;
  }
  if (!interrupted_) {
    interrupted_ = true;
    deadline_ms = now + kInterruptGraceMs;
    if (pid > 0) ::kill(-pid, SIGINT);  // KeyboardInterrupt in the cell, state kept
    return;
  }
  hard_killed_ = true;
  sessions_->kill(*session_, "an exec timed out and did not stop within " +
                                 std::to_string(kInterruptGraceMs) + " ms of its interrupt");
}

void Exec::kill_leftovers() {
  if (!session_) kill_all();
}

bool Exec::wants_warm(const agent::ExecRequest& req) {
  // The zygote runs as the sandbox user: a root program starts cold.
  if (req.language != "python" || req.as_root) return false;
  // PYTHON* variables change how the interpreter starts: only a cold start honours them.
  for (const auto& [k, v] : req.env)
    if (k.rfind("PYTHON", 0) == 0) return false;
  return true;
}

bool Exec::spawn_warm(Zygote& z, const std::string& file, const std::string& cwd,
                      const std::vector<std::string>& env, int stdin_fd, int out_w, int err_w,
                      const std::string& procs, uint32_t timeout_ms) {
  UniqueFd null_fd;
  if (stdin_fd < 0) {
    null_fd = UniqueFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_fd.valid()) return false;
    stdin_fd = null_fd.get();
  }
  int64_t start = now_ms();
  int stdio[3] = {stdin_fd, out_w, err_w};
  std::string error;
  pid_t p = z.spawn(file, cwd, env, stdio, -1, procs, error);
  if (p <= 0) {
    std::string msg = "vial-agent: warm exec failed, starting cold: " + error + "\n";
    write_all_raw(2, msg.c_str());
    return false;
  }
  pid = p;
  warm = true;
  start_ms = start;
  deadline_ms = start_ms + timeout_ms;
  return true;
}

Exec::~Exec() {
  if (session_ && session_->busy == id) session_->busy = 0;
  close_fd(out_fd);
  close_fd(err_fd);
  close_fd(in_fd);
  if (!cgroup_.empty()) {
    Cgroups::kill_all(cgroup_);
    if (cgroups_) cgroups_->remove(cgroup_);
  }
  if (!workdir_.empty()) remove_tree(workdir_);
}

void Exec::signal_all(int sig) {
  if (!cgroup_.empty()) {
    if (sig == SIGKILL)
      Cgroups::kill_all(cgroup_);
    else
      Cgroups::signal_all(cgroup_, sig);
  }
  if (pid > 0) {
    ::kill(-pid, sig);  // the child called setsid: its pgid is its pid
    if (!exited_) ::kill(pid, sig);
  }
}

void Exec::on_exit(int status, const rusage& ru, int64_t now) {
  exited_ = true;
  status_ = status;
  ru_ = ru;
  end_ms = now;
}

void Exec::close_stdin() {
  close_fd(in_fd);
  stdin_buf.clear();
  stdin_off = 0;
}

agent::ExecResult Exec::result() const {
  agent::ExecResult r;
  if (timed_out) {
    r.signal = interrupted_ && !hard_killed_ ? SIGINT : SIGKILL;
  } else if (WIFEXITED(status_)) {
    r.exit_code = WEXITSTATUS(status_);
  } else if (WIFSIGNALED(status_)) {
    r.signal = WTERMSIG(status_);
  }
  r.timed_out = timed_out;
  r.stdout_truncated = out_bytes > out_limit;
  r.stderr_truncated = err_bytes > err_limit;
  r.wall_ms = static_cast<uint64_t>(std::max<int64_t>(0, end_ms - start_ms));
  auto ms = [](const timeval& tv) {
    return static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec) / 1000;
  };
  r.cpu_ms = ms(ru_.ru_utime) + ms(ru_.ru_stime);
  r.max_rss_kib = static_cast<uint64_t>(ru_.ru_maxrss);
  r.warm = warm;
  return r;
}

}  // namespace vial::guest
