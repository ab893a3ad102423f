#include "sandbox/runner.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "images/image_store.h"
#include "sandbox/orphans.h"
#include "storage/pristine_overlays.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"
#include "vm/host_tsc.h"
#include "vm/guest_boot.h"
#include "vm/template.h"

namespace fs = std::filesystem;
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


// Removes what it holds unless released: covers the window before VmProcess owns the files.
struct PendingFiles {
  std::vector<fs::path> paths;
  ~PendingFiles() {
    std::error_code ec;
    for (const auto& p : paths) fs::remove_all(p, ec);
  }
};

// What a template of this image depends on: the image's files, QEMU, the VM's shape.
TemplateSpec template_spec(const ImageInfo& image, const VmConfig& config) {
  TemplateSpec spec;
  spec.name = image.language;
  spec.key = file_identity(image.kernel) + "|" + file_identity(image.initramfs) + "|" + file_identity(image.rootfs) +
             "|" + qemu_identity() + "|" + std::to_string(config.vcpus);
  spec.boot = config;
  spec.base_disk = image.rootfs;
  spec.warm_up.language = image.language;
  spec.warm_up.code = print_one_code(image.language);
  return spec;
}

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
  PendingFiles pending;  // until a VmProcess owns them
  const fs::path vm_dir = run_dir() / name;
  const fs::path overlay = overlays_dir() / (name + ".qcow2");
  pending.paths = {vm_dir, overlay};
  ensure_private_dir(vm_dir);

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
  const auto boot_timeout = options.boot_timeout.count() > 0 ? options.boot_timeout
                                                               : default_boot_timeout(options.accel);

  RunResult result;
  RunningVm vm;
  // A named vector: GCC 12 miscompiles initializer lists inside co_await expressions.
  std::vector<fs::path> owned_by_vm = {overlay};
  if (options.use_template) {
    TemplateSpec spec = template_spec(image, config);
    Template tpl = co_await ensure_template(fs::weakly_canonical(templates_dir()), run_dir(), spec, boot_timeout);
    create_overlay_fast(tpl.disk, overlay);
    vm = co_await restore_clone(tpl, config, vm_dir, std::move(owned_by_vm), boot_timeout);
    co_await guarded(vm.agent->reseed(), *vm.process, boot_timeout, "reseeding the clone", ErrorKind::boot_failed);
    result.source = "template";
  } else {
    create_overlay_fast(image.rootfs, overlay);
    config.warm_interpreters = false;
    vm = co_await boot_vm(config, vm_dir, std::move(owned_by_vm), boot_timeout);
    result.source = "cold";
  }
  auto client = vm.agent;
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
                                            *vm.process, request.timeout + kExecGrace, "waiting for the program",
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
  vm.process->destroy();
  result.timing.total_ms = ms_since(start);
  co_return result;
}

}  // namespace vial
