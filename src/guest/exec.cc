#include "guest/exec.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "guest/util.h"

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

std::unique_ptr<Exec> Exec::spawn(uint32_t id, const agent::ExecRequest& req,
                                  const ExecConfig& cfg, std::string& error) {
  std::unique_ptr<Exec> ex(new Exec());
  ex->id = id;
  ex->cgroups_ = cfg.cgroups;
  ex->out_limit = req.stdout_limit;
  ex->err_limit = req.stderr_limit;

  std::string cwd = req.cwd;
  if (cwd.empty()) {
    cwd = is_dir("/home/sandbox") ? "/home/sandbox" : "/tmp";
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

  std::map<std::string, std::string> env = {
      {"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"HOME", "/home/sandbox"},
      {"USER", "sandbox"}, {"LANG", "C.UTF-8"}, {"TERM", "dumb"}};
  for (const auto& [k, v] : req.env) env[k] = v;

  // Everything the child needs is prepared here: after fork it only makes syscalls.
  std::vector<std::string> env_strs;
  for (const auto& [k, v] : env) env_strs.push_back(k + "=" + v);
  std::vector<char*> envp, argvp;
  for (auto& s : env_strs) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (auto& s : argv) argvp.push_back(s.data());
  argvp.push_back(nullptr);
  std::string not_found = "vial-agent: " + argv[0] + ": command not found\n";
  std::string no_perm = "vial-agent: " + argv[0] + ": permission denied\n";

  if (cfg.cgroups && cfg.cgroups->enabled()) ex->cgroup_ = cfg.cgroups->create(id);
  std::string procs = ex->cgroup_.empty() ? "" : ex->cgroup_ + "/cgroup.procs";

  int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, rep[2] = {-1, -1};
  auto close_all = [&] {
    for (int* p : {out, err, in, rep}) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
  };
  if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(rep, O_CLOEXEC) ||
      (req.stdin_open && pipe2(in, O_CLOEXEC))) {
    error = std::string("pipe: ") + strerror(errno);
    close_all();
    return nullptr;
  }

  // Warm path: fork the program from the language's zygote. Any failure falls back to the
  // cold path below (the zygote restarts by itself later).
  if (!code_file.empty() && cfg.warm && wants_warm(req)) {
    if (Zygote* z = cfg.warm->get(req.language)) {
      if (ex->spawn_warm(*z, code_file, cwd, env_strs, req.stdin_open ? in[0] : -1, out[1],
                         err[1], procs, req.timeout_ms)) {
        close_fd(out[1]);
        close_fd(err[1]);
        close_fd(in[0]);
        close_fd(rep[0]);
        close_fd(rep[1]);
        ex->out_fd = out[0];
        ex->err_fd = err[0];
        ex->in_fd = in[1];
        set_nonblock(ex->out_fd);
        set_nonblock(ex->err_fd);
        if (ex->in_fd >= 0) set_nonblock(ex->in_fd);
        return ex;
      }
    }
  }

  // as_root keeps the agent's root: root of this VM only, which is the isolation boundary.
  bool drop = cfg.drop_privileges && !req.as_root;
  const char* cwd_c = cwd.c_str();
  pid_t pid = fork();
  if (pid < 0) {
    error = std::string("fork: ") + strerror(errno);
    close_all();
    return nullptr;
  }
  if (pid == 0) {
    int rfd = rep[1];
    // Join the cgroup first, so every descendant is contained from the start.
    if (!procs.empty()) {
      int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, "0", 1) != 1) child_fail(rfd, "join cgroup");
      close(fd);
    }
    if (setsid() < 0) child_fail(rfd, "setsid");
    // Dispositions set to ignore and the blocked mask survive exec: reset them.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
    int stdin_fd = req.stdin_open ? in[0] : open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (stdin_fd < 0) child_fail(rfd, "open /dev/null");
    // All pipe fds are >= 3 (main() keeps 0-2 occupied), so dup2 can't clobber a source.
    if (dup2(stdin_fd, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
      child_fail(rfd, "dup2");
    // Close everything else except the report pipe (CLOEXEC, closes on exec).
    if (rfd > 3) syscall(SYS_close_range, 3u, static_cast<unsigned>(rfd - 1), 0u);
    syscall(SYS_close_range, static_cast<unsigned>(rfd + 1), ~0u, 0u);
    make_child_expendable();
    if (drop) {
      if (setgroups(0, nullptr) != 0) child_fail(rfd, "setgroups");
      if (setgid(kSandboxGid) != 0) child_fail(rfd, "setgid");
      if (setuid(kSandboxUid) != 0) child_fail(rfd, "setuid");
    }
    if (chdir(cwd_c) != 0) child_fail(rfd, "chdir");
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

  ex->pid = pid;
  ex->start_ms = now_ms();
  ex->deadline_ms = ex->start_ms + req.timeout_ms;
  close_fd(out[1]);
  close_fd(err[1]);
  close_fd(in[0]);
  close_fd(rep[1]);
  ex->out_fd = out[0];
  ex->err_fd = err[0];
  ex->in_fd = in[1];
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
    ex->pid = -1;
    return nullptr;
  }
  set_nonblock(ex->out_fd);
  set_nonblock(ex->err_fd);
  if (ex->in_fd >= 0) set_nonblock(ex->in_fd);
  return ex;
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
  int null_fd = -1;
  if (stdin_fd < 0) {
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) return false;
    stdin_fd = null_fd;
  }
  int go[2] = {-1, -1};
  if (pipe2(go, O_CLOEXEC) != 0) {
    close_fd(null_fd);
    return false;
  }
  int64_t start = now_ms();
  int fds[4] = {stdin_fd, out_w, err_w, go[0]};
  std::string error;
  pid_t p = z.spawn(file, cwd, env, fds, error);
  close_fd(go[0]);
  close_fd(null_fd);
  if (p <= 0) {
    std::string msg = "vial-agent: warm exec failed, starting cold: " + error + "\n";
    write_all_raw(2, msg.c_str());
    close_fd(go[1]);
    return false;
  }
  // The child waits on `go`: contain it before it runs anything.
  if (!procs.empty() && write_file(procs, std::to_string(p)) != 0) {
    ::kill(p, SIGKILL);  // our child now (reparented): the server's reap loop collects it
    close_fd(go[1]);
    return false;
  }
  pid = p;
  warm = true;
  start_ms = start;
  deadline_ms = start_ms + timeout_ms;
  [[maybe_unused]] ssize_t w = write(go[1], "g", 1);
  close_fd(go[1]);
  return true;
}

Exec::~Exec() {
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
    r.signal = SIGKILL;
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
