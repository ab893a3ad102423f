// The sandbox engine: creates VMs from templates (or cold), keeps a warm pool of restored
// clones per language, admits VMs within a CPU/memory budget, executes code, destroys.
// The CLI's one-shot run and the server both use it.
//
// IMPORTANT: a VmManager and its Vms live on one single-threaded executor; call them only from
// coroutines running there.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "net/gateway.h"
#include "sandbox/runner.h"
#include "vm/guest_boot.h"

namespace vial {

struct VmManagerSettings {
  Accel accel;
  unsigned memory_mib = kDefaultMemoryMib;  // per VM
  // VMs alive at once, pooled ones included.
  unsigned max_concurrent_vms = 4;
  // Guest memory all VMs may claim together; 0: 80% of the host's MemAvailable at start().
  uint64_t memory_budget_mib = 0;
  // Restored, agent-ready clones kept per language; absent or 0: no pool for it.
  std::map<std::string, unsigned> warm_pool;
  // Restore from template snapshots (built on first use); false: every VM boots cold.
  bool use_templates = true;
  std::chrono::milliseconds boot_timeout{0};  // 0: default_boot_timeout(accel)
  // How long create_vm waits for capacity before failing with ErrorKind::capacity.
  std::chrono::milliseconds admission_timeout{30000};
};

enum class VmSource { warm, template_restore, cold };
const char* to_string(VmSource source);

class VmManager;

// One live sandbox. State (files, processes started in the background) persists across
// execute() calls until the VM is destroyed. Python code runs in the VM's notebook session
// (one persistent interpreter): variables, imports and functions persist too, as in a
// notebook; a timeout interrupts the code (KeyboardInterrupt) and, if it does not stop within
// a second, restarts the interpreter (the next execute's stderr says the state was lost).
// JavaScript, shell and argv execs run as fresh processes each time (files persist).
class Vm final {
 public:
  const std::string& name() const { return name_; }
  const std::string& language() const { return language_; }
  const std::string& tenant() const { return tenant_; }
  const std::string& task() const { return task_; }
  VmSource source() const { return source_; }
  pid_t qemu_pid() const { return vm_.process->pid(); }
  bool alive() const { return vm_.process->running(); }
  // The VM's agent channel, for guest file operations (sandbox/guest_files.h) and raw execs.
  // Calls through it are not bounded by the VM's death the way execute() is: a dead VM ends
  // them with AgentConnectionLost.
  std::shared_ptr<AgentClient> agent() const { return vm_.agent; }

  ~Vm();
  // Gives the guest the network `policy` allows (issue 13): the gateway on this side, the
  // interception in the guest. `listeners` are the policy's published ports, bound by
  // net::bind_published_ports (taken from the vector before the first suspension). Once per
  // VM; throws Error when the guest can't set it up. References, not values: GCC 12 mishandles
  // by-value coroutine parameters made from temporaries (see DESIGN.md).
  asio::awaitable<void> enable_network(const net::NetPolicy& policy,
                                       std::vector<asio::ip::tcp::acceptor>* listeners = nullptr);
  // Null while the VM has no network.
  const net::Gateway* gateway() const { return gateway_.get(); }

  // Runs request.code or request.argv (request.language must be this VM's). A timeout kills
  // only the program; the VM stays usable. Python code executes one at a time per VM (its
  // session's interpreter): a concurrent one fails with Error(conflict). What the program did is data; vial's failures throw.
  asio::awaitable<RunResult> execute(const RunRequest& request, const ExecCallbacks& stream,
                                     bool collect_output = true);

 private:
  friend class VmManager;
  Vm(std::string name, std::string language, VmSource source, RunningVm vm, double startup_ms)
      : name_(std::move(name)), session_(name_), language_(std::move(language)), source_(source), vm_(std::move(vm)),
        startup_ms_(startup_ms) {}
  std::string name_;
  // The guest's interpreter session for this VM: fixed at launch, so a pooled VM's warm-up
  // session is the one its owner's code runs in after the VM is renamed for that owner.
  const std::string session_;
  std::string language_;
  std::string tenant_;
  std::string task_;
  VmSource source_;
  RunningVm vm_;
  std::shared_ptr<net::Gateway> gateway_;
  double startup_ms_;    // boot or restore, measured when the VM was made
  double acquire_ms_ = 0;  // create_vm's own time (pool hit, or admission + startup)
};

class VmManager final : public std::enable_shared_from_this<VmManager> {
 public:
  // Shared because its background pool fillers keep it alive until they have seen stop().
  static std::shared_ptr<VmManager> create(asio::any_io_executor executor, VmManagerSettings settings);
  VmManager(const VmManager&) = delete;
  VmManager& operator=(const VmManager&) = delete;
  // Kills every VM it made (pooled or handed out) and removes their files.
  ~VmManager();

  // Validates settings, makes the templates of pooled languages, starts filling the pools.
  asio::awaitable<void> start();
  // Destroys pooled and live VMs and stops refilling; safe to call twice.
  void stop();

  // A VM for `language`: from the warm pool if one is ready, else restored from the
  // template, else booted cold. Waits for capacity up to admission_timeout, then throws
  // Error(capacity). tenant and task name the VM (logs, `ps`).
  asio::awaitable<std::shared_ptr<Vm>> create_vm(std::string language, std::string tenant = {},
                                                 std::string task = {});
  // Kills the VM and removes its files; its slot goes back to the budget at once.
  void destroy_vm(const std::shared_ptr<Vm>& vm);

  struct Stats {
    unsigned live = 0;  // pooled + handed out
    std::map<std::string, unsigned> pooled;
    uint64_t admission_rejections = 0;
  };
  Stats stats() const;
  const VmManagerSettings& settings() const { return settings_; }

 private:
  VmManager(asio::any_io_executor executor, VmManagerSettings settings);
  // `label` ("tenant.task", may be empty) becomes part of the VM's name and QEMU's -name.
  asio::awaitable<std::unique_ptr<Vm>> launch(const std::string& language, const std::string& label);
  asio::awaitable<void> fill_pool(std::string language);
  bool has_room() const;
  bool evict_pooled_except(const std::string& language);
  void wake_all();
  asio::awaitable<void> wait_for_change(std::chrono::steady_clock::time_point until);

  asio::any_io_executor executor_;
  VmManagerSettings settings_;
  bool running_ = false;
  unsigned live_ = 0;
  uint64_t rejections_ = 0;
  std::map<std::string, std::deque<std::unique_ptr<Vm>>> pool_;
  std::set<std::shared_ptr<Vm>> handed_out_;
  // Cancelled whenever capacity or a pool changes, so waiters re-check.
  asio::steady_timer changed_;
};

}  // namespace vial
