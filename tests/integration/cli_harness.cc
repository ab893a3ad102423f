#include "cli_harness.h"

#include "util/paths.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

extern char** environ;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace vial::test {
namespace {

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void set_nonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

fs::path vial_binary() {
  if (const char* v = env_or_null("VIAL_BIN")) return v;
  return VIAL_TEST_BIN;
}

// Where `make` built the images: VIAL_IMAGES_HOME, else vial's own default for this user.
fs::path real_vial_home() {
  if (const char* v = env_or_null("VIAL_IMAGES_HOME")) return v;
  return vial_home();
}

fs::path real_images_dir() { return real_vial_home() / "images"; }

std::optional<std::string> missing_image(const std::string& language) {
  std::error_code ec;
  fs::path dir = real_images_dir() / language;
  for (const char* f : {"vmlinux", "initramfs.img", "rootfs.qcow2", "manifest.json"}) {
    if (!fs::is_regular_file(dir / f, ec)) {
      return "the " + language + " image is not built in " + real_images_dir().string() +
             " (missing " + f + "): run `build/bin/vial image build " + language +
             "` (or set VIAL_IMAGES_HOME to a vial home that has it)";
    }
  }
  if (!fs::exists(vial_binary(), ec)) return "vial binary not found at " + vial_binary().string();
  return std::nullopt;
}

std::string CliResult::describe() const {
  std::ostringstream s;
  s << "exit_code=" << exit_code << " signal=" << term_signal << (deadline_hit ? " (deadline hit)" : "")
    << " after " << seconds << " s\n--- stdout (" << out.size() << " bytes) ---\n"
    << out.substr(0, 2000) << "\n--- stderr (" << err.size() << " bytes) ---\n"
    << err.substr(0, 4000);
  return s.str();
}

CliProcess::CliProcess(const std::vector<std::string>& argv, const CliOptions& options) {
  // The environment: ours, with the overrides applied.
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : options.env) {
    if (v) {
      env[k] = *v;
    } else {
      env.erase(k);
    }
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) || ::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC)) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  start_ = Clock::now();
  deadline_ = start_ + options.deadline;
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    // Dies with the test binary, so an aborted test does not leave vial (and its VM) behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    if (options.stdin_data) {
      ::dup2(in_pipe[0], 0);
    } else {
      int null_fd = ::open("/dev/null", O_RDONLY);
      ::dup2(null_fd, 0);
    }
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execve(cargv[0], cargv.data(), envp.data());
    std::string msg = std::string("exec ") + cargv[0] + ": " + std::strerror(errno) + "\n";
    [[maybe_unused]] auto n = ::write(2, msg.data(), msg.size());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  in_fd_ = in_pipe[1];
  out_fd_ = out_pipe[0];
  err_fd_ = err_pipe[0];
  set_nonblock(in_fd_);
  set_nonblock(out_fd_);
  set_nonblock(err_fd_);
  if (options.stdin_data) {
    stdin_data_ = *options.stdin_data;
  }
  if (stdin_data_.empty()) close_fd(in_fd_);
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
}

CliProcess::~CliProcess() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  close_fd(in_fd_);
  close_fd(out_fd_);
  close_fd(err_fd_);
  close_fd(pidfd_);
}

void CliProcess::send_signal(int sig) {
  if (pid_ > 0 && !status_) ::kill(pid_, sig);
}

void CliProcess::reap(bool block) {
  if (status_ || pid_ <= 0) return;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    status_ = st;
    result_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  }
}

// Moves bytes until `until`; returns early when the process has exited and (unless
// stop_on_exit_only) its output pipes are closed. Returns true if the process still runs.
bool CliProcess::pump(Clock::time_point until, bool stop_on_exit_only) {
  char buf[65536];
  for (;;) {
    reap(false);
    if (status_ && (stop_on_exit_only || (out_fd_ < 0 && err_fd_ < 0))) return false;
    auto now = Clock::now();
    if (now >= until) return !status_;
    std::vector<pollfd> fds;
    if (in_fd_ >= 0) fds.push_back({in_fd_, POLLOUT, 0});
    if (out_fd_ >= 0) fds.push_back({out_fd_, POLLIN, 0});
    if (err_fd_ >= 0) fds.push_back({err_fd_, POLLIN, 0});
    if (!status_ && pidfd_ >= 0) fds.push_back({pidfd_, POLLIN, 0});
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
    int timeout = static_cast<int>(std::min<long long>(left + 1, 200));
    if (fds.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(timeout));
      continue;
    }
    int r = ::poll(fds.data(), fds.size(), timeout);
    if (r < 0 && errno != EINTR) throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
    if (r <= 0) continue;
    for (const auto& p : fds) {
      if (!p.revents) continue;
      if (p.fd == in_fd_) {
        if (p.revents & (POLLERR | POLLHUP)) {
          close_fd(in_fd_);
          continue;
        }
        ssize_t n = ::write(in_fd_, stdin_data_.data() + stdin_off_, stdin_data_.size() - stdin_off_);
        if (n > 0) stdin_off_ += static_cast<size_t>(n);
        if ((n < 0 && errno != EAGAIN && errno != EINTR) || stdin_off_ == stdin_data_.size()) close_fd(in_fd_);
      } else if (p.fd == out_fd_ || p.fd == err_fd_) {
        int& fd = p.fd == out_fd_ ? out_fd_ : err_fd_;
        std::string& sink = p.fd == out_fd_ ? result_.out : result_.err;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
          sink.append(buf, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          close_fd(fd);
        }
      }
    }
  }
}

bool CliProcess::pump_for(std::chrono::milliseconds d) {
  return pump(std::min(Clock::now() + d, deadline_), true);
}

bool CliProcess::wait_for_stdout(const std::string& needle, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (result_.out.find(needle) == std::string::npos) {
    if (Clock::now() >= end || !pump_for(100ms)) return result_.out.find(needle) != std::string::npos;
  }
  return true;
}

CliResult CliProcess::finish() {
  pump(deadline_, false);
  if (!status_) {
    result_.deadline_hit = true;
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  // Output still open after exit (an inherited pipe): take what is there, briefly.
  if (out_fd_ >= 0 || err_fd_ >= 0) pump(Clock::now() + 5s, false);
  close_fd(in_fd_);
  close_fd(out_fd_);
  close_fd(err_fd_);
  int st = *status_;
  if (WIFEXITED(st)) result_.exit_code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) result_.term_signal = WTERMSIG(st);
  return result_;
}

CliResult run_program(const std::vector<std::string>& argv, const CliOptions& options) {
  CliProcess p(argv, options);
  return p.finish();
}

std::vector<pid_t> qemu_pids_containing(const std::string& needle) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string cmdline = read_all(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find("qemu-system") == std::string::npos || cmdline.find(needle) == std::string::npos) continue;
    // A zombie has an empty cmdline, so this is a live (or dying) process.
    pids.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return pids;
}

std::vector<pid_t> wait_no_qemu(const std::string& needle, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  for (;;) {
    auto pids = qemu_pids_containing(needle);
    if (pids.empty() || Clock::now() >= end) return pids;
    std::this_thread::sleep_for(50ms);
  }
}

bool wait_for_qemu(const std::string& needle, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (!qemu_pids_containing(needle).empty()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::vector<std::string> dir_entries(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> vm_overlays(const fs::path& home) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& name : dir_entries(home / "overlays")) {
    if (!fs::is_directory(home / "overlays" / name, ec)) names.push_back(name);
  }
  return names;
}

void VialHomeTest::SetUp() {
  std::string tmpl = (fs::temp_directory_path() / "vial-test-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
  home_ = tmpl;
  std::error_code ec;
  fs::create_directory_symlink(real_images_dir(), home_ / "images", ec);
  ASSERT_FALSE(ec) << "symlink images: " << ec.message();
  // Share the templates too: each is built once (seconds under TCG), not once per test. Their
  // backing files are canonical paths, so they outlive this home.
  fs::create_directories(real_vial_home() / "templates", ec);
  fs::create_directory_symlink(real_vial_home() / "templates", home_ / "templates", ec);
  ASSERT_FALSE(ec) << "symlink templates: " << ec.message();
  // Reuse the host's KVM verdict so no test pays for (or depends on) a KVM probe.
  if (fs::exists(real_vial_home() / "accel.json", ec)) {
    fs::copy_file(real_vial_home() / "accel.json", home_ / "accel.json", ec);
  }
}

void VialHomeTest::TearDown() {
  if (home_.empty()) return;
  const std::string needle = home_.string() + "/";
  auto left = wait_no_qemu(needle, 15s);
  EXPECT_TRUE(left.empty()) << left.size() << " QEMU process(es) of " << home_ << " still running, e.g. pid "
                            << (left.empty() ? 0 : left.front());
  for (pid_t pid : left) ::kill(pid, SIGKILL);
  EXPECT_EQ(dir_entries(home_ / "run"), std::vector<std::string>{}) << "files left in " << home_ / "run";
  EXPECT_EQ(vm_overlays(home_), std::vector<std::string>{}) << "overlays left in " << home_ / "overlays";
  wait_no_qemu(needle, 5s);
  std::error_code ec;
  fs::remove_all(home_, ec);  // images/ is a symlink: removed, never followed
}

CliOptions VialHomeTest::options() const {
  CliOptions o;
  o.env["VIAL_HOME"] = home_.string();
  return o;
}

CliResult VialHomeTest::vial(const std::vector<std::string>& args, CliOptions opts) const {
  return start_vial(args, std::move(opts))->finish();
}

std::unique_ptr<CliProcess> VialHomeTest::start_vial(const std::vector<std::string>& args, CliOptions opts) const {
  if (!opts.env.count("VIAL_HOME")) opts.env["VIAL_HOME"] = home_.string();
  std::vector<std::string> argv = {vial_binary().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<CliProcess>(argv, opts);
}

fs::path VialHomeTest::private_dir(const std::string& name) {
  fs::path dir = home_ / name;
  std::error_code ec;
  fs::remove(dir, ec);
  fs::create_directories(dir, ec);
  return dir;
}

void VialHomeTest::expect_next_run_works(const std::string& language) {
  std::string code = language == "python" ? "print(6*7)" : language == "javascript" ? "console.log(42)" : "echo 42";
  auto r = vial({"run", "-l", language, "-t", "60", "-c", code});
  EXPECT_EQ(r.exit_code, 0) << "the next run in the same home failed: " << r.describe();
  EXPECT_EQ(r.out, "42\n") << r.describe();
}

unsigned short free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace vial::test
