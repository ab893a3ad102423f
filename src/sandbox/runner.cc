#include "sandbox/runner.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "images/image_store.h"
#include "sandbox/orphans.h"
#include "storage/pristine_overlays.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"
#include "vm/host_tsc.h"
#include "vm/vm_process.h"

namespace fs = std::filesystem;
using namespace boost::asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

namespace vial {
namespace {

// Extra time the host grants past the program's own timeout before it gives up on the guest.
constexpr std::chrono::seconds kExecGrace{10};

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string next_vm_name() {
  static std::atomic<unsigned> counter{0};
  return "vm-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

// Runs `op` unless the deadline passes or QEMU exits first; both of those throw an Error
// that carries the console tail, so a panic or a hung boot explains itself.
template <typename T>
asio::awaitable<T> guarded(asio::awaitable<T> op, VmProcess& vm, std::chrono::milliseconds deadline,
                           const std::string& what, ErrorKind on_timeout) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex, deadline);
  int watch_fd = ::dup(vm.pidfd());
  if (watch_fd < 0) throw_errno("dup pidfd", errno);
  asio::posix::stream_descriptor exit_watch(ex, watch_fd);
  auto outcome = co_await (std::move(op) || timer.async_wait(asio::use_awaitable) ||
                           exit_watch.async_wait(asio::posix::descriptor_base::wait_read, asio::use_awaitable));
  if (outcome.index() == 0) co_return std::get<0>(std::move(outcome));
  if (outcome.index() == 1) {
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(deadline).count();
    throw Error(on_timeout, vm.describe_failure(what + ": no answer within " + std::to_string(secs) + " s"));
  }
  throw Error(ErrorKind::boot_failed, vm.describe_failure(what + ": the VM stopped"));
}

// QEMU creates the listening socket a few ms after it starts; retry until it is there.
asio::awaitable<AgentClient::Socket> connect_agent(fs::path socket_path) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer pause(ex);
  for (;;) {
    AgentClient::Socket socket(ex);
    boost::system::error_code ec;
    co_await socket.async_connect({socket_path.string()}, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) co_return socket;
    pause.expires_after(std::chrono::milliseconds(2));
    co_await pause.async_wait(asio::use_awaitable);
  }
}

// A copy of the base's pristine overlay (see storage/pristine_overlays.h): ~0.1 ms instead
// of a qemu-img process.
fs::path create_overlay(const fs::path& base, const fs::path& overlay) {
  create_overlay_fast(base, overlay);
  return overlay;
}

// Removes what it holds unless released: covers the window before VmProcess owns the files.
struct PendingFiles {
  std::vector<fs::path> paths;
  ~PendingFiles() {
    std::error_code ec;
    for (const auto& p : paths) fs::remove_all(p, ec);
  }
};

agent::ExecRequest to_exec_request(const RunRequest& r) {
  agent::ExecRequest e;
  e.language = r.language;
  e.code = r.code;
  e.env = r.env;
  e.cwd = r.cwd;
  e.timeout_ms = static_cast<uint32_t>(std::chrono::milliseconds(r.timeout).count());
  e.stdout_limit = r.stdout_limit;
  e.stderr_limit = r.stderr_limit;
  return e;
}

}  // namespace

void validate(const RunRequest& r) {
  check_image_language(r.language);
  if (r.code.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw Error(ErrorKind::invalid_input, "code is empty: pass -c CODE or a file with code in it");
  }
  if (r.timeout.count() <= 0 || r.timeout > kMaxRunTimeout) {
    throw Error(ErrorKind::invalid_input, "timeout must be between 1 and " +
                                              std::to_string(kMaxRunTimeout.count()) + " seconds");
  }
  if (r.memory_mib < kMinMemoryMib) {
    throw Error(ErrorKind::invalid_input, "memory must be at least " + std::to_string(kMinMemoryMib) + " MiB");
  }
  for (const auto& [key, value] : r.env) {
    if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos ||
        value.find('\0') != std::string::npos) {
      throw Error(ErrorKind::invalid_input, "invalid environment variable name '" + key + "'");
    }
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
  const auto start = Clock::now();
  validate(request);
  ImageInfo image = require_image(request.language);

  ensure_private_dir(run_dir());
  ensure_private_dir(overlays_dir());
  reap_orphans(run_dir(), overlays_dir());

  const std::string name = next_vm_name();
  PendingFiles pending;
  const fs::path vm_dir = run_dir() / name;
  const fs::path overlay = overlays_dir() / (name + ".qcow2");
  pending.paths = {vm_dir, overlay};
  ensure_private_dir(vm_dir);
  write_owner(vm_dir);
  create_overlay(image.rootfs, overlay);

  VmConfig config;
  config.accel = options.accel;
  config.name = "vial-" + name;
  config.kernel = image.kernel;
  config.initramfs = image.initramfs;
  config.root_disk = overlay;
  config.agent_socket = vm_dir / "agent.sock";
  config.console_log = vm_dir / "console.log";
  config.memory_mib = request.memory_mib;
  if (options.accel.kind == AccelKind::tcg) config.tsc_khz = host_tsc_khz();
  auto vm = VmProcess::launch(config, vm_dir, {overlay});
  pending.paths.clear();
  write_qemu_pid(vm_dir, vm->pid());

  const auto boot_timeout = options.boot_timeout.count() > 0 ? options.boot_timeout
                                                               : default_boot_timeout(options.accel);
  const auto boot_deadline = Clock::now() + boot_timeout;
  auto remaining = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(boot_deadline - Clock::now());
  };
  auto socket = co_await guarded(connect_agent(config.agent_socket), *vm, remaining(),
                                 "waiting for QEMU to start", ErrorKind::boot_failed);
  auto client = AgentClient::create(std::move(socket));
  co_await guarded(client->hello(), *vm, remaining(), "waiting for the guest agent to boot",
                   ErrorKind::boot_failed);

  RunResult result;
  result.timing.boot_ms = ms_since(start);
  const auto exec_start = Clock::now();
  ExecCallbacks sinks;
  sinks.on_stdout = [&](std::string_view chunk) {
    if (options.collect_output) result.stdout_data.append(chunk);
    if (stream.on_stdout) stream.on_stdout(chunk);
  };
  sinks.on_stderr = [&](std::string_view chunk) {
    if (options.collect_output) result.stderr_data.append(chunk);
    if (stream.on_stderr) stream.on_stderr(chunk);
  };
  agent::ExecResult exit = co_await guarded(client->exec(to_exec_request(request), sinks, request.stdin_data),
                                            *vm, request.timeout + kExecGrace, "waiting for the program",
                                            ErrorKind::timeout);
  result.timing.exec_ms = ms_since(exec_start);

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
  client->close();
  vm->destroy();
  result.timing.total_ms = ms_since(start);
  co_return result;
}

}  // namespace vial
