// Child processes that are always reaped: a Child kills and waits for its process when it
// goes out of scope, and the process dies with vial (PR_SET_PDEATHSIG) even on SIGKILL.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace vial {

struct SpawnOptions {
  // Where the child's stdout and stderr go; empty means /dev/null. Ignored when inherit_stdio.
  std::filesystem::path output_path;
  // Or an open fd (e.g. a pipe) to use as stdout and stderr; the caller keeps ownership.
  int output_fd = -1;
  // Keep vial's stdout/stderr (for tools whose progress the user should see).
  bool inherit_stdio = false;
  // Open fds the child receives as 3, 4, ... in this order (at most 16; e.g. a migration stream).
  std::vector<int> pass_fds;
  // Own process group, so a Ctrl-C at the terminal reaches vial, which then tears down in order.
  bool new_process_group = true;
};

class Child final {
 public:
  // Starts argv[0] (looked up in PATH). Throws Error(unavailable) if it cannot be executed.
  static Child spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

  Child() = default;
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  // A pidfd: readable once the process has exited. Owned by the Child.
  int pidfd() const { return pidfd_; }
  bool running() const { return pid_ > 0 && !status_; }

  // Non-blocking: the wait status once the process has exited.
  std::optional<int> try_wait();
  // Blocks until exit; returns the wait status.
  int wait();
  // Sends sig (no-op once reaped).
  void signal(int sig);
  // SIGKILL then wait; safe to call twice.
  void kill_and_reap();

 private:
  void reset();
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<int> status_;
};

struct CaptureResult {
  int exit_code = -1;  // -1 when killed by a signal or by the deadline
  bool timed_out = false;
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv to completion with a deadline and returns what it printed.
CaptureResult run_capture(const std::vector<std::string>& argv, std::chrono::milliseconds deadline);

// True if an executable named `name` is on PATH (or `name` is an executable path).
std::optional<std::filesystem::path> find_program(const std::string& name);

// The start time of `pid` (field 22 of /proc/<pid>/stat); empty if there is no such process.
// With the pid it identifies a process even after its pid is reused.
std::string process_start_time(int pid);

// Exit code of a wait status the way a shell reports it (128+signal for a signal).
int shell_exit_code(int wait_status);

}  // namespace vial
