#include "sandbox/vm_manager.h"

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <fstream>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include "images/image_store.h"
#include "sandbox/orphans.h"
#include "storage/pristine_overlays.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"
#include "vm/host_tsc.h"
#include "vm/template.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace vial {
namespace {

// Extra time the host grants past the program's own timeout before it gives up on the guest.
constexpr std::chrono::seconds kExecGrace{10};
// A pool that failed to make a VM waits this long before trying again.
constexpr std::chrono::seconds kRefillBackoff{2};

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// "tenant.task" reduced to characters safe in file names and QEMU's -name, at most 48.
std::string owner_label(const std::string& tenant, const std::string& task) {
  std::string label;
  for (char c : tenant + (task.empty() ? "" : "." + task)) {
    if (label.size() == 48) break;
    label += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  }
  return label;
}

std::string next_vm_name() {
  static std::atomic<unsigned> counter{0};
  return "vm-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

// Removes what it holds: covers the window before a VmProcess owns the files.
struct PendingFiles {
  std::vector<fs::path> paths;
  ~PendingFiles() {
    std::error_code ec;
    for (const auto& p : paths) fs::remove_all(p, ec);
  }
};

uint64_t mem_available_mib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib / 1024;
  }
  return 0;
}

// What a template of this image depends on: the image's files, QEMU, the VM's shape (a clone
// resumes the template's CPU and kernel, so a change to either must make a new template).
TemplateSpec template_spec(const ImageInfo& image, const VmConfig& config) {
  TemplateSpec spec;
  spec.name = image.language;
  spec.key = vm_shape_key(config, {image.kernel, image.initramfs, image.rootfs});
  spec.boot = config;
  spec.base_disk = image.rootfs;
  spec.warm_up.language = image.language;
  spec.warm_up.code = print_one_code(image.language);
  return spec;
}

// `session` names the notebook session python code runs in ("" for none).
agent::ExecRequest to_exec_request(const RunRequest& r, const std::string& session) {
  agent::ExecRequest e;
  if (r.argv.empty()) {
    e.language = r.language;
    e.code = r.code;
    // Root and user code get separate interpreters: a session can't switch user.
    if (r.language == "python") e.session = r.as_root ? session + "#root" : session;
  } else {
    e.argv = r.argv;  // the language only chose the VM's image
  }
  e.as_root = r.as_root;
  e.env = r.env;
  e.cwd = r.cwd;
  e.timeout_ms = static_cast<uint32_t>(std::chrono::milliseconds(r.timeout).count());
  e.stdout_limit = r.stdout_limit;
  e.stderr_limit = r.stderr_limit;
  return e;
}

}  // namespace

const char* to_string(VmSource source) {
  switch (source) {
    case VmSource::warm: return "warm";
    case VmSource::template_restore: return "template";
    case VmSource::cold: return "cold";
  }
  return "cold";
}

asio::awaitable<RunResult> Vm::execute(const RunRequest& request, const ExecCallbacks& stream, bool collect_output) {
  validate(request);
  if (request.language != language_) {
    throw Error(ErrorKind::invalid_input, "this VM runs " + language_ + ", not " + request.language);
  }
  RunResult result;
  result.source = to_string(source_);
  result.timing.acquire_ms = acquire_ms_;
  result.timing.boot_ms = source_ == VmSource::warm ? 0 : startup_ms_;
  const ExecCallbacks sinks = output_sinks(result, stream, collect_output);
  const auto start = Clock::now();
  agent::ExecResult exit = co_await guarded(vm_.agent->exec(to_exec_request(request, session_), sinks, request.stdin_data),
                                            *vm_.process, request.timeout + kExecGrace, "waiting for the program",
                                            ErrorKind::timeout);
  result.timing.exec_ms = ms_since(start);
  take_exit(result, exit);
  if (gateway_) result.network = NetworkCounts{gateway_->allowed(), gateway_->denied()};
  co_return result;
}

std::shared_ptr<VmManager> VmManager::create(asio::any_io_executor executor, VmManagerSettings settings) {
  return std::shared_ptr<VmManager>(new VmManager(std::move(executor), std::move(settings)));
}

VmManager::VmManager(asio::any_io_executor executor, VmManagerSettings settings)
    : executor_(std::move(executor)), settings_(std::move(settings)), changed_(executor_) {
  changed_.expires_at(asio::steady_timer::time_point::max());
}

VmManager::~VmManager() { stop(); }

asio::awaitable<void> VmManager::start() {
  if (running_) co_return;
  if (settings_.max_concurrent_vms < 1) throw Error(ErrorKind::invalid_input, "max_concurrent_vms must be at least 1");
  if (settings_.memory_mib < kMinMemoryMib) {
    throw Error(ErrorKind::invalid_input, "memory must be at least " + std::to_string(kMinMemoryMib) + " MiB");
  }
  for (const char* program : {"qemu-system-x86_64", "qemu-storage-daemon"}) {
    if (!find_program(program)) {
      throw Error(ErrorKind::unavailable, std::string(program) +
                                              " not found: install QEMU with scripts/install-deps "
                                              "(apt-get install qemu-system-x86 qemu-utils)");
    }
  }
  if (settings_.memory_budget_mib == 0) settings_.memory_budget_mib = mem_available_mib() * 8 / 10;
  if (settings_.boot_timeout.count() <= 0) settings_.boot_timeout = default_boot_timeout(settings_.accel);
  for (const auto& [language, size] : settings_.warm_pool) {
    require_image(language);  // fail now, with the command that builds it
    if (size > 0 && !settings_.use_templates) {
      throw Error(ErrorKind::invalid_input, "a warm pool needs templates (use_templates)");
    }
  }
  ensure_private_dir(run_dir());
  ensure_private_dir(overlays_dir());
  reap_orphans(run_dir(), overlays_dir());
  running_ = true;
  for (const auto& [language, size] : settings_.warm_pool) {
    if (size > 0) {
      asio::co_spawn(executor_, [self = shared_from_this(), language] { return self->fill_pool(language); },
                     asio::detached);
    }
  }
}

void VmManager::stop() {
  running_ = false;
  for (auto& [language, vms] : pool_) {
    for (auto& vm : vms) vm->vm_.shut_down();
    live_ -= static_cast<unsigned>(vms.size());
    vms.clear();
  }
  for (const auto& vm : handed_out_) vm->vm_.shut_down();
  live_ -= static_cast<unsigned>(handed_out_.size());
  handed_out_.clear();
  wake_all();
}

bool VmManager::has_room() const {
  return live_ < settings_.max_concurrent_vms &&
         uint64_t{live_ + 1} * settings_.memory_mib <= settings_.memory_budget_mib;
}

bool VmManager::evict_pooled_except(const std::string& language) {
  for (auto& [lang, vms] : pool_) {
    if (lang == language || vms.empty()) continue;
    vms.front()->vm_.shut_down();
    vms.pop_front();
    --live_;
    return true;
  }
  return false;
}

void VmManager::wake_all() { changed_.cancel(); }

asio::awaitable<void> VmManager::wait_for_change(Clock::time_point until) {
  using namespace boost::asio::experimental::awaitable_operators;
  asio::steady_timer deadline(executor_, until);
  co_await (changed_.async_wait(asio::as_tuple(asio::use_awaitable)) ||
            deadline.async_wait(asio::as_tuple(asio::use_awaitable)));
}

asio::awaitable<std::shared_ptr<Vm>> VmManager::create_vm(std::string language, std::string tenant,
                                                          std::string task) {
  if (!running_) throw Error(ErrorKind::internal, "VmManager::create_vm before start()");
  check_image_language(language);
  const auto start = Clock::now();
  const auto give_up = start + settings_.admission_timeout;
  std::unique_ptr<Vm> vm;
  while (!vm) {
    auto& pooled = pool_[language];
    while (!pooled.empty() && !vm) {
      vm = std::move(pooled.front());
      pooled.pop_front();
      if (!vm->alive()) {  // died while pooled: replace it
        vm->vm_.shut_down();
        vm.reset();
        --live_;
      }
    }
    if (vm) {
      wake_all();  // the pool has room to refill
      break;
    }
    if (has_room() || evict_pooled_except(language)) {
      ++live_;
      try {
        vm = co_await launch(language, owner_label(tenant, task));
      } catch (...) {
        --live_;
        wake_all();
        throw;
      }
      break;
    }
    if (Clock::now() >= give_up) {
      ++rejections_;
      throw Error(ErrorKind::capacity,
                  "no capacity for another VM: " + std::to_string(live_) + " of " +
                      std::to_string(settings_.max_concurrent_vms) + " VMs alive (memory budget " +
                      std::to_string(settings_.memory_budget_mib) + " MiB); retry later or raise the limits");
    }
    co_await wait_for_change(give_up);
    if (!running_) throw Error(ErrorKind::cancelled, "the VM manager is stopping");
  }
  if (vm->source_ == VmSource::warm && !(tenant.empty() && task.empty())) {
    vm->name_ += "-" + owner_label(tenant, task);  // pooled before its owner was known
  }
  vm->tenant_ = std::move(tenant);
  vm->task_ = std::move(task);
  vm->acquire_ms_ = ms_since(start);
  std::shared_ptr<Vm> shared(std::move(vm));
  handed_out_.insert(shared);
  co_return shared;
}

Vm::~Vm() {
  if (gateway_) gateway_->close();
}

asio::awaitable<void> Vm::enable_network(const net::NetPolicy& policy,
                                         std::vector<asio::ip::tcp::acceptor>* listeners) {
  if (!policy.enabled) co_return;
  if (gateway_) throw Error(ErrorKind::conflict, "the VM's network is already set up");
  auto client = vm_.agent;
  std::vector<asio::ip::tcp::acceptor> bound;
  if (listeners) bound = std::move(*listeners);
  gateway_ = net::Gateway::create(client->socket_executor(), policy, net::GatewayIdentity{name_, {}}, std::move(bound));
  std::weak_ptr<AgentClient> weak = client;
  gateway_->start([weak](agent::FrameType type, uint32_t id, std::string_view payload) {
    if (auto a = weak.lock()) a->send_frame(type, id, payload);
  });
  client->set_net_hook([gw = gateway_](const agent::Frame& f) { gw->handle(f); });
  const agent::NetUpBody body;
  const std::string what = "setting up the guest's network";
  co_await guarded(client->net_up(body), *vm_.process, std::chrono::seconds(10), what, ErrorKind::boot_failed);
}

void VmManager::destroy_vm(const std::shared_ptr<Vm>& vm) {
  if (!vm || handed_out_.erase(vm) == 0) return;
  if (vm->gateway_) vm->gateway_->close();
  vm->vm_.shut_down();
  --live_;
  wake_all();
}

VmManager::Stats VmManager::stats() const {
  Stats s;
  s.live = live_;
  s.admission_rejections = rejections_;
  for (const auto& [language, vms] : pool_) s.pooled[language] = static_cast<unsigned>(vms.size());
  return s;
}

asio::awaitable<std::unique_ptr<Vm>> VmManager::launch(const std::string& language, const std::string& label) {
  const auto start = Clock::now();
  ImageInfo image = require_image(language);
  const std::string name = next_vm_name() + (label.empty() ? "" : "-" + label);
  PendingFiles pending;  // until a VmProcess owns them
  const fs::path vm_dir = run_dir() / name;
  const fs::path overlay = overlays_dir() / (name + ".qcow2");
  pending.paths = {vm_dir, overlay};
  ensure_private_dir(vm_dir);

  VmConfig config;
  config.accel = settings_.accel;
  config.name = "vial-" + name;
  config.kernel = image.kernel;
  config.initramfs = image.initramfs;
  config.root_disk = overlay;
  config.agent_socket = vm_dir / "agent.sock";
  config.console_log = vm_dir / "console.log";
  config.memory_mib = settings_.memory_mib;
  if (settings_.accel.kind == AccelKind::tcg) config.tsc_khz = host_tsc_khz();

  RunningVm vm;
  VmSource source;
  // A named vector: GCC 12 miscompiles initializer lists inside co_await expressions.
  std::vector<fs::path> owned_by_vm = {overlay};
  if (settings_.use_templates) {
    TemplateSpec spec = template_spec(image, config);
    Template tpl = co_await ensure_template(fs::weakly_canonical(templates_dir()), run_dir(), spec,
                                           settings_.boot_timeout);
    create_overlay_fast(tpl.disk, overlay);
    vm = co_await restore_clone(tpl, config, vm_dir, std::move(owned_by_vm), settings_.boot_timeout);
    co_await guarded(vm.agent->reseed(), *vm.process, settings_.boot_timeout, "reseeding the clone",
                     ErrorKind::boot_failed);
    source = VmSource::template_restore;
  } else {
    create_overlay_fast(image.rootfs, overlay);
    config.warm_interpreters = false;  // one program per cold VM: nothing to keep warm
    const std::vector<int> no_fds;  // named: see DESIGN.md, GCC 12 coroutine pitfalls
    vm = co_await boot_vm(config, vm_dir, std::move(owned_by_vm), settings_.boot_timeout, no_fds);
    source = VmSource::cold;
  }
  pending.paths.clear();  // the VmProcess owns them now: they live as long as the VM
  co_return std::unique_ptr<Vm>(new Vm(name, language, source, std::move(vm), ms_since(start)));
}

asio::awaitable<void> VmManager::fill_pool(std::string language) {
  const unsigned target = settings_.warm_pool[language];
  while (running_) {
    std::erase_if(pool_[language], [&](const std::unique_ptr<Vm>& vm) {  // pooled VMs that died
      if (vm->alive()) return false;
      vm->vm_.shut_down();
      --live_;
      return true;
    });
    if (pool_[language].size() < target && has_room()) {
      ++live_;
      std::unique_ptr<Vm> vm;
      try {
        vm = co_await launch(language, {});
        // A VM's first exec starts its interpreter session and, under TCG, translates that
        // code for the first time (~300 ms); a pooled VM pays it before it is handed out.
        RunRequest warm_up;
        warm_up.language = language;
        warm_up.code = print_one_code(language);
        const ExecCallbacks discard;
        co_await vm->execute(warm_up, discard, false);
      } catch (const std::exception&) {
        // Can't await in a handler: note the failure and back off below.
        vm.reset();
      }
      if (vm && running_) {
        vm->source_ = VmSource::warm;
        pool_[language].push_back(std::move(vm));
        wake_all();
        continue;
      }
      --live_;  // vm, if any, is destroyed on scope exit (we are stopping)
      wake_all();
      if (running_) co_await wait_for_change(Clock::now() + kRefillBackoff);
      continue;
    }
    co_await wait_for_change(Clock::now() + std::chrono::seconds(1));  // also notices pooled VMs dying
  }
}

}  // namespace vial
