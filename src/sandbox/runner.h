// One-shot sandbox: boot a fresh microVM from a language image, run code, tear it all down.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "net/policy.h"
#include "vm/accel.h"
#include "vm/agent_client.h"

namespace vial {

inline constexpr std::chrono::seconds kMaxRunTimeout{3600};
inline constexpr uint64_t kDefaultStdoutLimit = 1u << 20;
inline constexpr uint64_t kDefaultStderrLimit = 100u << 10;
// Exit code for a program killed at its timeout, as timeout(1) reports it.
inline constexpr int kTimeoutExitCode = 124;

struct RunRequest {
  std::string language;  // python | javascript | shell: selects the VM image
  // Exactly one of code (in `language`) and argv (a program run directly, looked up in PATH).
  std::string code;
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;  // empty: the sandbox user's home
  std::optional<std::string> stdin_data;
  std::chrono::seconds timeout{30};
  unsigned memory_mib = 256;
  uint64_t stdout_limit = kDefaultStdoutLimit;
  uint64_t stderr_limit = kDefaultStderrLimit;
  // Run as root in the guest instead of the sandbox user (named machines, whose user owns the
  // VM; root there is root of that VM only).
  bool as_root = false;
};

// Throws Error(invalid_input) naming the bad field.
void validate(const RunRequest& request);

struct RunTiming {
  double acquire_ms = 0;  // getting a VM: a warm pool hit, or admission + restore/boot
  double boot_ms = 0;  // restore or boot to agent ready (and any template build); 0 for a warm VM
  double exec_ms = 0;  // exec sent to exit received
  double total_ms = 0;
};

// A networked VM's decisions so far (net::Gateway's counts).
struct NetworkCounts {
  uint64_t allowed = 0;
  uint64_t denied = 0;
};

// What the sandboxed program did (data, not an error).
struct RunResult {
  std::string stdout_data;
  std::string stderr_data;
  int exit_code = 0;  // the program's, 128+N for signal N, 124 on timeout
  std::optional<int> signal;
  bool timed_out = false;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  RunTiming timing;
  std::string source;  // "warm" (from the pool), "template" (restored), "cold" (booted)
  std::optional<NetworkCounts> network;  // set when the VM has a network
};

// Callbacks that pass output on to `stream` and, with `collect`, append it to `result`
// (which must outlive them).
ExecCallbacks output_sinks(RunResult& result, const ExecCallbacks& stream, bool collect);

// Fills what the agent reported (timed_out, signal, truncation) and the exit code a shell
// would show: the program's own, 128+N when killed by signal N, 124 at its timeout.
void take_exit(RunResult& result, const agent::ExecResult& exit);

struct RunOptions {
  Accel accel;
  // How long the guest may take to answer hello; 0 picks a default for the accelerator.
  std::chrono::milliseconds boot_timeout{0};
  // Keep stdout/stderr in the result (off when streaming to a terminal only).
  bool collect_output = true;
  // Start from a template snapshot of the image (built on first use); false: cold boot.
  bool use_template = true;
  // The guest's network (off unless the policy enables it); published ports are refused here.
  net::NetPolicy network;
};

// Boots, runs and destroys one sandbox. Failures of vial (no image, boot failure) throw Error;
// whatever the program did is in the result. Cancelling the awaitable (Ctrl-C) tears down too.
asio::awaitable<RunResult> run_once(const RunRequest& request, const RunOptions& options,
                                    const ExecCallbacks& stream);

// A one-line program printing "1" in `language`: for probes, benchmarks and smoke tests.
std::string print_one_code(const std::string& language);

// Boot deadline used when RunOptions::boot_timeout is 0 ($VIAL_BOOT_TIMEOUT in seconds wins).
std::chrono::milliseconds default_boot_timeout(const Accel& accel);

}  // namespace vial
