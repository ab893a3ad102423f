#include "vm/template.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "qmp/qmp_client.h"
#include "storage/pristine_overlays.h"
#include "storage/qemu_img.h"
#include "util/fnv.h"
#include "util/paths.h"
#include "util/unique_fd.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

constexpr const char* kReadyFile = "ready";
constexpr std::chrono::milliseconds kPoll{2};

Template paths_in(const fs::path& dir) { return {dir, dir / "memory", dir / "state", dir / "disk.qcow2"}; }

bool complete(const Template& t) {
  std::error_code ec;
  return fs::exists(t.dir / kReadyFile, ec) && fs::exists(t.memory, ec) && fs::exists(t.state, ec) &&
         fs::exists(t.disk, ec);
}

std::string unique_suffix() {
  static std::atomic<unsigned> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// QMP over a socketpair: QEMU inherits one end already connected (VmConfig::qmp_fd), so there
// is no socket file to poll for and no connect racing QEMU's monitor set-up.
class QmpPair final {
 public:
  QmpPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("socketpair", errno);
    ours_.reset(fds[0]);
    theirs_.reset(fds[1]);
  }
  int theirs() const { return theirs_.get(); }
  // After the spawn: QEMU's end must close with QEMU, so that its death reads as EOF.
  void spawned() { theirs_.reset(); }
  asio::awaitable<std::shared_ptr<QmpClient>> attach() {
    QmpClient::Socket socket(co_await asio::this_coro::executor, asio::local::stream_protocol(), ours_.release());
    co_return co_await QmpClient::attach(std::move(socket));
  }

 private:
  UniqueFd ours_;
  UniqueFd theirs_;
};

// Polls query-migrate until the migration (either direction) has completed.
asio::awaitable<void> wait_migration(QmpClient& qmp) {
  for (;;) {
    auto info = co_await qmp.execute("query-migrate");
    std::string status = info.value("status", "");
    if (status == "completed") co_return;
    if (status == "failed" || status == "cancelled") {
      throw Error(ErrorKind::internal, "template migration " + status + ": " + info.value("error-desc", "no reason given"));
    }
    co_await sleep_for(kPoll);
  }
}

// The agent starts its warm interpreters after boot; a template must contain them ready.
asio::awaitable<void> wait_warm_interpreter(AgentClient& agent, const std::string& language) {
  auto has = [&](const std::vector<std::string>& v) { return std::find(v.begin(), v.end(), language) != v.end(); };
  for (;;) {
    auto hello = co_await agent.hello();
    if (has(hello.warm) || !has(hello.warming)) co_return;
    co_await sleep_for(std::chrono::milliseconds(20));
  }
}

// The whole stream of the one connection `acceptor` gets, into `file`.
asio::awaitable<void> receive_file(asio::local::stream_protocol::acceptor& acceptor, fs::path file) {
  auto socket = co_await acceptor.async_accept(asio::use_awaitable);
  std::string data;
  auto [ec, n] = co_await asio::async_read(socket, asio::dynamic_buffer(data), asio::as_tuple(asio::use_awaitable));
  if (ec && ec != asio::error::eof) throw Error(ErrorKind::internal, "receiving the template state: " + ec.message());
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) throw Error(ErrorKind::internal, "cannot write " + file.string());
}

// Saves the device state into `file` (RAM stays in the shared memory file: x-ignore-shared).
// QEMU connects to a socket of ours rather than piping into a program (`exec:`), so its
// seccomp filter can deny spawning processes to every VM, template builds included.
asio::awaitable<void> save_state(QmpClient& qmp, const fs::path& socket_path, const fs::path& file) {
  using namespace boost::asio::experimental::awaitable_operators;
  asio::local::stream_protocol::acceptor acceptor(co_await asio::this_coro::executor,
                                                  asio::local::stream_protocol::endpoint(socket_path.string()));
  nlohmann::json migrate = {{"uri", "unix:" + socket_path.string()}};
  co_await qmp.execute("migrate", std::move(migrate));
  co_await (receive_file(acceptor, file) && wait_migration(qmp));
}

asio::awaitable<void> enable_ignore_shared(QmpClient& qmp) {
  nlohmann::json cap = {{"capability", "x-ignore-shared"}, {"state", true}};
  nlohmann::json args = {{"capabilities", nlohmann::json::array({cap})}};
  co_await qmp.execute("migrate-set-capabilities", std::move(args));
}

// Boots the template VM, warms it up, saves memory + state + disk into `dir`.
asio::awaitable<void> build_template(const fs::path& dir, const fs::path& run_root, const TemplateSpec& spec,
                                     std::chrono::milliseconds boot_timeout) {
  const Template t = paths_in(dir);
  // A boot snapshot's base is seen once per machine folder: one qemu-img beats making a pristine.
  if (spec.boot.park) {
    create_overlay_with_qemu_img(fs::absolute(spec.base_disk).string(), t.disk);
  } else {
    create_overlay_fast(spec.base_disk, t.disk);
  }

  const fs::path vm_dir = run_root / ("vm-template-" + unique_suffix());
  ensure_private_dir(vm_dir);
  VmConfig config = spec.boot;
  config.name = "vial-template-" + spec.name;
  config.root_disk = t.disk;
  config.memory_file = t.memory;
  config.memory_shared = true;
  config.agent_socket = vm_dir / "agent.sock";
  config.console_log = vm_dir / "console.log";
  QmpPair qmp_pair;
  config.qmp_fd = 3;  // the first passed fd
  // Named vectors: GCC 12 miscompiles initializer lists inside co_await expressions.
  const std::vector<fs::path> no_owned_files;
  const std::vector<int> pass_fds{qmp_pair.theirs()};
  RunningVm vm = co_await boot_vm(config, vm_dir, no_owned_files, boot_timeout, pass_fds);
  qmp_pair.spawned();
  VmProcess& process = *vm.process;

  const auto deadline = std::chrono::steady_clock::now() + boot_timeout;
  if (spec.boot.park) {
    auto hello = co_await guarded(vm.agent->hello(), process, time_left(deadline), "asking the guest whether it parked",
                                  ErrorKind::boot_failed);
    if (!hello.parked) {
      throw ParkUnsupported("its agent (" + hello.agent + ") cannot park before the root disk for a boot snapshot");
    }
  } else {
    co_await guarded(wait_warm_interpreter(*vm.agent, spec.warm_up.language), process, time_left(deadline),
                     "waiting for the warm interpreter", ErrorKind::boot_failed);
    auto warm = co_await guarded(vm.agent->exec(spec.warm_up, {}), process, time_left(deadline),
                                 "warming up the template", ErrorKind::boot_failed);
    if (warm.exit_code != 0) {
      throw Error(ErrorKind::boot_failed, process.describe_failure("the template's warm-up program failed"));
    }
  }

  auto qmp = co_await guarded(qmp_pair.attach(), process, time_left(deadline), "connecting to QMP",
                              ErrorKind::boot_failed);
  co_await qmp->execute("stop");
  co_await enable_ignore_shared(*qmp);
  co_await guarded(save_state(*qmp, vm_dir / "migrate.sock", t.state), process, time_left(deadline),
                   "saving the template", ErrorKind::timeout);
  try {
    co_await qmp->execute("quit", nullptr, std::chrono::seconds(5));
  } catch (const std::exception&) {
    // QEMU may close the socket before answering quit.
  }
  process.wait_exit();  // quit flushes the disk; QEMU exits within milliseconds
  process.destroy();

  for (const auto& f : {t.memory, t.state, t.disk}) ::chmod(f.c_str(), 0444);
  std::ofstream(dir / kReadyFile) << spec.key << "\n";
}

}  // namespace

std::string stable_hash(const std::string& text) { return Fnv64().add(text).hex(); }

std::string vm_shape_key(const VmConfig& config, const std::vector<fs::path>& files) {
  VmConfig shape = config;
  shape.tsc_khz = 0;  // measured afresh by every process; only the first boot uses it
  std::string key;
  for (const auto& f : files) key += file_identity(f) + "|";
  return key + qemu_identity() + "|" + std::to_string(config.vcpus) + "|" + guest_cpu(shape) + "|" +
         kernel_cmdline(shape);
}

asio::awaitable<Template> ensure_template(const fs::path& root, const fs::path& run_root, const TemplateSpec& spec,
                                          std::chrono::milliseconds boot_timeout) {
  const std::string prefix = spec.name + "-" + std::to_string(spec.boot.memory_mib) + "M-" + spec.boot.accel.name() + "-";
  const std::string id = prefix + stable_hash(std::to_string(kTemplateFormat) + "|" + spec.key);
  const Template t = paths_in(root / id);
  if (complete(t)) co_return t;

  ensure_private_dir(root);
  // One builder per template across processes; the others wait and then reuse its work.
  UniqueFd lock(::open((root / (id + ".lock")).c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  if (!lock.valid()) throw_errno("cannot create the template lock in " + root.string(), errno);
  const auto give_up = std::chrono::steady_clock::now() + 2 * boot_timeout;
  while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (std::chrono::steady_clock::now() > give_up) {
      throw Error(ErrorKind::timeout, "another vial has been building the template " + id + " for too long");
    }
    co_await sleep_for(std::chrono::milliseconds(50));
  }
  if (complete(t)) co_return t;

  const fs::path building = root / (id + ".tmp");
  std::error_code ec;
  fs::remove_all(building, ec);  // a dead builder's leftovers: we hold the lock
  ensure_private_dir(building);
  std::fprintf(stderr, "vial: building the %s template (once; later runs start from it)...\n", spec.name.c_str());
  try {
    co_await build_template(building, run_root, spec, boot_timeout);
  } catch (...) {
    fs::remove_all(building, ec);
    fs::remove(root / (id + ".lock"), ec);  // an image that can't boot must not leave files behind
    throw;
  }
  fs::rename(building, t.dir, ec);
  if (ec) throw Error(ErrorKind::internal, "cannot install template " + t.dir.string() + ": " + ec.message());
  prune_templates(root, prefix, t.dir);
  co_return t;
}

asio::awaitable<std::unique_ptr<VmProcess>> restore_process(const Template& tpl, VmConfig config, fs::path vm_dir,
                                                            std::vector<fs::path> owned_files,
                                                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  config.memory_file = tpl.memory;
  config.memory_shared = false;
  config.incoming = true;
  UniqueFd state(::open(tpl.state.c_str(), O_RDONLY | O_CLOEXEC));
  if (!state.valid()) throw_errno("cannot open template state " + tpl.state.string(), errno);
  QmpPair qmp_pair;
  config.qmp_fd = 4;  // after the state file

  auto process = VmProcess::launch(config, std::move(vm_dir), std::move(owned_files), {state.get(), qmp_pair.theirs()});
  qmp_pair.spawned();
  auto qmp = co_await guarded(qmp_pair.attach(), *process, time_left(deadline), "connecting to QMP",
                              ErrorKind::boot_failed);
  co_await enable_ignore_shared(*qmp);
  nlohmann::json incoming = {{"uri", "fd:3"}};  // the state file, inherited as fd 3
  co_await qmp->execute("migrate-incoming", std::move(incoming));
  co_await guarded(wait_migration(*qmp), *process, time_left(deadline), "restoring the template",
                   ErrorKind::boot_failed);
  co_await qmp->execute("cont");
  qmp->close();
  co_return process;
}

asio::awaitable<RunningVm> restore_clone(const Template& tpl, VmConfig config, fs::path vm_dir,
                                         std::vector<fs::path> owned_files, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  RunningVm vm;
  vm.process = co_await restore_process(tpl, std::move(config), std::move(vm_dir), std::move(owned_files), timeout);
  vm.agent = co_await connect_agent(*vm.process, deadline);
  co_return vm;
}

void prune_templates(const fs::path& root, const std::string& prefix, const fs::path& keep) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.path() == keep || name.rfind(prefix, 0) != 0 || entry.path().extension() == ".lock") continue;
    // Skip one being built: its lock is held.
    fs::path lock_path = root / (entry.path().stem().string() + ".lock");
    UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CLOEXEC));
    if (lock.valid() && ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) continue;
    fs::remove_all(entry.path(), ec);
    fs::remove(lock_path, ec);
  }
}

}  // namespace vial
