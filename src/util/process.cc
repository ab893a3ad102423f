#include "util/process.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "util/error.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Runs in the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(const std::vector<char*>& argv, const SpawnOptions& options, int out_fd,
                             int err_pipe, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
  if (options.new_process_group) ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (!options.inherit_stdio) {
    int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(null_fd, 0);
    ::dup2(out_fd >= 0 ? out_fd : ::open("/dev/null", O_WRONLY), 1);
    ::dup2(1, 2);
  }
  // Every fd here is O_CLOEXEC, so only these survive exec. Each is first moved above the
  // target range so that placing one can't clobber another.
  int high[16];
  const size_t n = std::min<size_t>(options.pass_fds.size(), 16);
  for (size_t i = 0; i < n; ++i) high[i] = ::fcntl(options.pass_fds[i], F_DUPFD_CLOEXEC, 100);
  for (size_t i = 0; i < n; ++i) ::dup2(high[i], static_cast<int>(3 + i));  // dup2 clears CLOEXEC
  // Not every fd vial holds is O_CLOEXEC (Asio's sockets aren't): a QEMU must not inherit the
  // agent or QMP connections of other VMs, or their peers never see them close.
  // CLOEXEC rather than close: the error pipe must stay open until exec succeeds.
  ::syscall(SYS_close_range, 3 + n, ~0U, CLOSE_RANGE_CLOEXEC);
  ::execvp(argv[0], argv.data());
  int err = errno;
  [[maybe_unused]] auto written = ::write(err_pipe, &err, sizeof err);
  ::_exit(127);
}

}  // namespace

Child Child::spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) throw Error(ErrorKind::internal, "spawn: empty argv");
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  int out_fd = -1;
  if (options.output_fd >= 0 && !options.inherit_stdio) {
    out_fd = ::fcntl(options.output_fd, F_DUPFD_CLOEXEC, 3);
    if (out_fd < 0) throw_errno("dup", errno);
  } else if (!options.output_path.empty() && !options.inherit_stdio) {
    out_fd = ::open(options.output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out_fd < 0) throw_errno("cannot open " + options.output_path.string(), errno);
  }
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe2", errno);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    if (out_fd >= 0) ::close(out_fd);
    throw_errno("fork", err);
  }
  if (pid == 0) exec_child(cargv, options, out_fd, err_pipe[1], parent);

  ::close(err_pipe[1]);
  if (out_fd >= 0) ::close(out_fd);
  Child child;
  child.pid_ = pid;
  child.pidfd_ = pidfd_open(pid);
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == sizeof exec_errno) {
    child.wait();
    throw Error(ErrorKind::unavailable,
                "cannot run " + argv[0] + ": " + std::strerror(exec_errno) +
                    (exec_errno == ENOENT ? " (install it: scripts/install-deps)" : ""));
  }
  if (child.pidfd_ < 0) throw_errno("pidfd_open", errno);
  return child;
}

Child::Child(Child&& other) noexcept { *this = std::move(other); }

Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    reset();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
  }
  return *this;
}

Child::~Child() {
  kill_and_reap();
  reset();
}

void Child::reset() {
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  pid_ = -1;
}

std::optional<int> Child::try_wait() {
  if (status_ || pid_ <= 0) return status_;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) status_ = status;
  return status_;
}

int Child::wait() {
  if (status_ || pid_ <= 0) return status_.value_or(-1);
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  status_ = status;
  return status;
}

void Child::signal(int sig) {
  if (running()) ::syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, 0);
}

void Child::kill_and_reap() {
  if (!running()) return;
  signal(SIGKILL);
  wait();
}

CaptureResult run_capture(const std::vector<std::string>& argv, std::chrono::milliseconds deadline) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2", errno);
  SpawnOptions opts;
  opts.output_fd = fds[1];
  CaptureResult result;
  Child child;
  try {
    child = Child::spawn(argv, opts);
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[1]);
  auto end = std::chrono::steady_clock::now() + deadline;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (result.timed_out) {
    child.kill_and_reap();
    return result;
  }
  int status = child.wait();
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::optional<fs::path> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return fs::path(name);
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  dirs += ":/usr/sbin:/sbin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    fs::path candidate = fs::path(dirs.substr(start, end - start)) / name;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

std::string process_start_time(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');  // the command name may contain spaces and parentheses
  if (paren == std::string::npos) return {};
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
  }
  return field;
}

int shell_exit_code(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

}  // namespace vial
