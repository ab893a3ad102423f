// Test harness for running the real `vial` binary as a subprocess with a private VIAL_HOME.
//
// Shared by tests/integration/run_cli_test.cc, run_errors_test.cc and tests/security/*_test.cc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vial::test {

using namespace std::chrono_literals;

// The vial binary under test: $VIAL_BIN, else the vial built with this test binary.
std::filesystem::path vial_binary();
// Where the built images live: $VIAL_IMAGES_HOME/images (if set), else /var/lib/vial/images.
std::filesystem::path real_vial_home();
std::filesystem::path real_images_dir();
// Nothing if the image for `language` is built, else a message saying how to build it.
std::optional<std::string> missing_image(const std::string& language);

struct CliOptions {
  // Variables set (or, when the value is nullopt, removed) on top of this process's environment.
  std::map<std::string, std::optional<std::string>> env;
  std::optional<std::string> stdin_data;  // nullopt: stdin is /dev/null
  std::chrono::milliseconds deadline = 240s;  // the process is SIGKILLed when it passes
};

struct CliResult {
  int exit_code = -1;   // -1 when killed by a signal
  int term_signal = 0;  // the signal that ended it, if any
  bool deadline_hit = false;
  std::string out;
  std::string err;
  double seconds = 0;  // wall time from spawn to exit

  // A one-line-ish description for assertion messages.
  std::string describe() const;
};

// A running vial (or any program) with piped stdin/stdout/stderr.
class CliProcess {
 public:
  CliProcess(const std::vector<std::string>& argv, const CliOptions& options);
  ~CliProcess();  // SIGKILLs and reaps if still running
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  pid_t pid() const { return pid_; }
  void send_signal(int sig);
  // Pumps stdin/stdout/stderr until the process exited and its output closed, or the deadline
  // (counted from spawn) passed, in which case the process is SIGKILLed.
  CliResult finish();
  // Pumps output for up to `d` without waiting for exit (keeps pipes drained). False if exited.
  bool pump_for(std::chrono::milliseconds d);
  // Pumps until stdout contains `needle`; false if the process exited or `timeout` passed first.
  bool wait_for_stdout(const std::string& needle, std::chrono::milliseconds timeout);

 private:
  bool pump(std::chrono::steady_clock::time_point until, bool stop_on_exit_only);
  void reap(bool block);

  pid_t pid_ = -1;
  int pidfd_ = -1;
  int in_fd_ = -1, out_fd_ = -1, err_fd_ = -1;
  std::string stdin_data_;
  size_t stdin_off_ = 0;
  std::optional<int> status_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point deadline_;
  CliResult result_;
};

// Runs to completion.
CliResult run_program(const std::vector<std::string>& argv, const CliOptions& options = {});

// PIDs of running qemu-system processes whose command line contains `needle`.
std::vector<pid_t> qemu_pids_containing(const std::string& needle);
// Polls until no such process remains or `timeout` passes; returns those still alive.
std::vector<pid_t> wait_no_qemu(const std::string& needle, std::chrono::milliseconds timeout);
// Polls until such a process exists; returns false after `timeout`.
bool wait_for_qemu(const std::string& needle, std::chrono::milliseconds timeout);
// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick).
unsigned short free_loopback_port();
// Entries of a directory (empty if it does not exist).
std::vector<std::string> dir_entries(const std::filesystem::path& dir);
// Per-VM overlay files in `home`/overlays: every non-directory entry (subdirectories are
// shared caches, such as the pristine overlays, which outlive a run by design).
std::vector<std::string> vm_overlays(const std::filesystem::path& home);

// A fixture with a private VIAL_HOME (a temp dir with images/ symlinked to the real images and
// the cached accelerator verdict copied). TearDown checks that no QEMU process of this home is
// left, that run/ is empty and overlays/ holds no file (see vm_overlays), then removes the home.
class VialHomeTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  const std::filesystem::path& home() const { return home_; }
  // Options with VIAL_HOME set; tests add their own variables.
  CliOptions options() const;
  // `vial <args...>` with VIAL_HOME set.
  CliResult vial(const std::vector<std::string>& args, CliOptions opts) const;
  CliResult vial(const std::vector<std::string>& args) const { return vial(args, options()); }
  // Starts `vial <args...>` without waiting.
  std::unique_ptr<CliProcess> start_vial(const std::vector<std::string>& args, CliOptions opts) const;
  // Replaces the shared images/ or templates/ by a real directory of this home; returns it.
  std::filesystem::path private_dir(const std::string& name);
  // Asserts (non-fatally) that one more ordinary run in this home works: the sandbox recovered.
  void expect_next_run_works(const std::string& language);

 private:
  std::filesystem::path home_;
};

// Skips the current test when the image is not built.
#define VIAL_REQUIRE_IMAGE(language)                                          \
  do {                                                                        \
    if (auto vial_missing_ = ::vial::test::missing_image(language)) {         \
      GTEST_SKIP() << *vial_missing_;                                         \
    }                                                                         \
  } while (0)

}  // namespace vial::test
