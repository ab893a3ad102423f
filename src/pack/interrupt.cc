#include "pack/interrupt.h"

#include <poll.h>
#include <signal.h>

#include <atomic>
#include <cerrno>

#include "util/error.h"
#include "util/process.h"
#include "vm/vm_process.h"

namespace vial::pack {
namespace {

std::atomic<bool> g_interrupted{false};
struct sigaction g_old_int{}, g_old_term{};

void on_signal(int) { g_interrupted.store(true); }

}  // namespace

InterruptGuard::InterruptGuard() {
  g_interrupted.store(false);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking read returns EINTR and the step checks the flag
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptGuard::~InterruptGuard() {
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
}

bool interrupted() { return g_interrupted.load(); }

void throw_if_interrupted() {
  if (interrupted()) throw Error(ErrorKind::cancelled, "interrupted: nothing was written");
}

void run_tool(const std::vector<std::string>& argv, const std::string& what, const std::filesystem::path& log,
              ErrorKind on_failure) {
  SpawnOptions options;
  options.output_path = log;
  Child child = Child::spawn(argv, options);  // own process group: Ctrl-C reaches only vial
  for (;;) {
    pollfd pfd{child.pidfd(), POLLIN, 0};
    int r = ::poll(&pfd, 1, 100);
    if (r < 0 && errno != EINTR) throw_errno("poll", errno);
    if (interrupted()) {
      child.kill_and_reap();
      throw_if_interrupted();
    }
    if (r > 0) break;
  }
  int status = child.wait();
  if (int code = shell_exit_code(status); code != 0) {
    throw Error(on_failure, what + " failed (" + argv[0] + " exited with " + std::to_string(code) +
                                         "):\n" + tail_file(log, 8));
  }
}

}  // namespace vial::pack
