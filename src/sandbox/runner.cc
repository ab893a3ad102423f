#include "sandbox/runner.h"

#include <cstdlib>

#include <boost/asio/this_coro.hpp>

#include "images/image_store.h"
#include "sandbox/vm_manager.h"
#include "util/error.h"

namespace vial {

void validate(const RunRequest& r) {
  check_image_language(r.language);
  if (!r.argv.empty()) {
    if (!r.code.empty()) throw Error(ErrorKind::invalid_input, "give either code or argv, not both");
    if (r.argv[0].empty()) throw Error(ErrorKind::invalid_input, "argv[0] is empty: name the program to run");
    for (const auto& arg : r.argv) {
      if (arg.find('\0') != std::string::npos) throw Error(ErrorKind::invalid_input, "argv contains a NUL byte");
    }
  } else if (r.code.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw Error(ErrorKind::invalid_input, "code is empty: pass code (-c CODE or a file with code in it) or an argv");
  }
  if (r.timeout.count() <= 0 || r.timeout > kMaxRunTimeout) {
    throw Error(ErrorKind::invalid_input, "timeout must be between 1 and " +
                                              std::to_string(kMaxRunTimeout.count()) + " seconds");
  }
  if (r.memory_mib < kMinMemoryMib) {
    throw Error(ErrorKind::invalid_input, "memory must be at least " + std::to_string(kMinMemoryMib) + " MiB");
  }
  // Names are shown escaped and cut: they may hold NULs (which would cut the message) or be huge.
  auto shown = [](const std::string& s) {
    std::string out;
    for (char c : s.substr(0, 64)) out += c == '\0' ? std::string("\\0") : std::string(1, c);
    return out + (s.size() > 64 ? "..." : "");
  };
  for (const auto& [key, value] : r.env) {
    if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos) {
      throw Error(ErrorKind::invalid_input, "invalid environment variable name '" + shown(key) +
                                                "': it must be non-empty, without '=' or NUL");
    }
    if (value.find('\0') != std::string::npos) {
      throw Error(ErrorKind::invalid_input, "the value of environment variable '" + shown(key) + "' contains a NUL byte");
    }
  }
  if (r.cwd.find('\0') != std::string::npos) throw Error(ErrorKind::invalid_input, "cwd contains a NUL byte");
}

ExecCallbacks output_sinks(RunResult& result, const ExecCallbacks& stream, bool collect) {
  ExecCallbacks sinks;
  sinks.on_stdout = [&result, stream, collect](std::string_view chunk) {
    if (collect) result.stdout_data.append(chunk);
    if (stream.on_stdout) stream.on_stdout(chunk);
  };
  sinks.on_stderr = [&result, stream, collect](std::string_view chunk) {
    if (collect) result.stderr_data.append(chunk);
    if (stream.on_stderr) stream.on_stderr(chunk);
  };
  return sinks;
}

void take_exit(RunResult& result, const agent::ExecResult& exit) {
  result.timed_out = exit.timed_out;
  result.signal = exit.signal;
  result.stdout_truncated = exit.stdout_truncated;
  result.stderr_truncated = exit.stderr_truncated;
  if (exit.timed_out) {
    result.exit_code = kTimeoutExitCode;
  } else if (exit.exit_code) {
    result.exit_code = *exit.exit_code;
  } else {
    result.exit_code = 128 + exit.signal.value_or(0);
  }
}

std::string print_one_code(const std::string& language) {
  if (language == "python") return "print(1)";
  if (language == "javascript") return "console.log(1)";
  return "echo 1";
}

std::chrono::milliseconds default_boot_timeout(const Accel& accel) {
  if (const char* v = std::getenv("VIAL_BOOT_TIMEOUT"); v && std::atoi(v) > 0) {
    return std::chrono::seconds(std::atoi(v));
  }
  // Under TCG a cold boot takes seconds, more with both cores busy.
  return accel.kind == AccelKind::kvm ? std::chrono::seconds(20) : std::chrono::seconds(90);
}

asio::awaitable<RunResult> run_once(const RunRequest& request, const RunOptions& options,
                                    const ExecCallbacks& stream) {
  const auto start = std::chrono::steady_clock::now();
  validate(request);
  require_image(request.language);
  VmManagerSettings settings;
  settings.accel = options.accel;
  settings.memory_mib = request.memory_mib;
  settings.use_templates = options.use_template;
  settings.boot_timeout = options.boot_timeout;
  settings.max_concurrent_vms = 1;
  auto manager = VmManager::create(co_await asio::this_coro::executor, settings);
  co_await manager->start();
  if (!options.network.ports.empty()) {
    throw Error(ErrorKind::invalid_input, "published ports (-p) are for sessions and machines, not one-shot runs");
  }
  auto vm = co_await manager->create_vm(request.language);
  co_await vm->enable_network(options.network);
  RunResult result = co_await vm->execute(request, stream, options.collect_output);
  manager->stop();
  result.timing.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  co_return result;
}

}  // namespace vial
