#include "machine/detach.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "util/error.h"

namespace vial::machine {

void spawn_daemon(const std::vector<std::string>& argv, const std::filesystem::path& log, int keep_fd) {
  // Everything the children need is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const std::string log_path = log.string();

  pid_t child = ::fork();
  if (child < 0) throw_errno("fork", errno);
  if (child == 0) {
    ::setsid();
    pid_t daemon = ::fork();
    if (daemon != 0) ::_exit(daemon < 0 ? 1 : 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in < 0 || out < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (keep_fd >= 0) {
      if (keep_fd == 3) {
        ::fcntl(3, F_SETFD, 0);
      } else {
        ::dup2(keep_fd, 3);
      }
    }
    ::syscall(SYS_close_range, keep_fd >= 0 ? 4 : 3, UINT_MAX, 0);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(ErrorKind::internal, "could not start " + argv[0] + " in the background (fork failed)");
  }
}

}  // namespace vial::machine
