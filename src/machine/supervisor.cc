#include "machine/supervisor.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "machine/agent_relay.h"
#include "machine/boot_snapshot.h"
#include "machine/machine_store.h"
#include "net/gateway.h"
#include "pack/manifest.h"
#include "sandbox/runner.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"
#include "util/unique_fd.h"
#include "vm/guest_boot.h"
#include "vm/host_tsc.h"

namespace fs = std::filesystem;

namespace vial::machine {
namespace {

using namespace boost::asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::minutes kInitTimeout{10};
constexpr std::chrono::seconds kSyncTimeout{30};
constexpr std::chrono::seconds kQuitTimeout{10};

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

void log_line(const std::string& text) {
  std::fprintf(stderr, "%s vial machine: %s\n", now_iso8601().c_str(), text.c_str());
  std::fflush(stderr);
}

// Tells `vial machine start` (waiting on the other end of the pipe) how the start went.
class ReadyPipe final {
 public:
  explicit ReadyPipe(int fd) : fd_(fd) {}
  void send(const std::string& message) {
    if (!fd_.valid()) return;
    std::string line = message + "\n";
    [[maybe_unused]] ssize_t n = ::write(fd_.get(), line.data(), line.size());
    fd_.reset();
  }

 private:
  UniqueFd fd_;
};

VmConfig vm_config(const MachineRecord& record, const Accel& accel, const fs::path& vm_dir) {
  const fs::path dir = machine_dir(record.name);
  VmConfig config;
  config.accel = accel;
  config.name = "vial-machine-" + record.name;
  config.kernel = dir / pack::kKernelPart;
  config.initramfs = dir / pack::kInitramfsPart;
  config.root_disk = dir / "disk.qcow2";
  config.console_log = dir / "console.log";
  config.agent_socket = vm_dir / "agent.sock";
  config.memory_mib = record.config.memory_mib;
  config.vcpus = record.config.cpus;
  config.warm_interpreters = false;  // machines run commands, not snippets: no fork servers
  if (accel.kind == AccelKind::tcg) config.tsc_khz = host_tsc_khz();
  return config;
}

// Says hello on the raw guest channel; returns the guest's reply payload for the relay.
asio::awaitable<std::string> guest_hello(FrameConnection& guest) {
  guest.send(agent::FrameType::hello, 0, nlohmann::json(agent::HelloBody{}).dump());
  for (;;) {
    auto item = co_await guest.read();
    if (!item.frame || item.frame->type != agent::FrameType::hello) continue;
    auto hello = agent::parse_body<agent::HelloBody>(item.frame->payload);
    if (hello.version != agent::kProtocolVersion) {
      throw Error(ErrorKind::unavailable, "the machine's agent speaks protocol " + std::to_string(hello.version) +
                                              ", vial speaks " + std::to_string(agent::kProtocolVersion) +
                                              ": recreate the machine from a rebuilt image");
    }
    co_return item.frame->payload;
  }
}

// Turns the guest's network on over the raw guest channel, before the relay reads it.
asio::awaitable<void> guest_net_up(FrameConnection& guest) {
  const uint32_t id = 1;
  guest.send(agent::FrameType::net_up, id, nlohmann::json(agent::NetUpBody{}).dump());
  for (;;) {
    auto item = co_await guest.read();
    if (!item.frame || item.frame->request_id != id) continue;
    if (item.frame->type == agent::FrameType::ok) co_return;
    if (item.frame->type == agent::FrameType::error) {
      auto body = agent::parse_body<agent::ErrorBody>(item.frame->payload);
      throw Error(ErrorKind::boot_failed, "the guest could not set up its network: " + body.message);
    }
  }
}

// Listens on the machine's relay socket, owner-only.
AgentRelay::Acceptor listen_private(asio::any_io_executor ex, const fs::path& path) {
  std::error_code ec;
  fs::remove(path, ec);  // a stale socket of a run that died
  mode_t old = ::umask(077);
  AgentRelay::Acceptor acceptor(ex, asio::local::stream_protocol::endpoint(path.string()));
  ::umask(old);
  ::chmod(path.c_str(), 0600);
  return acceptor;
}

agent::ExecRequest guest_command(const MachineConfig& config, std::vector<std::string> argv,
                                 std::chrono::milliseconds timeout) {
  agent::ExecRequest request;
  request.argv = std::move(argv);
  request.env = config.env;
  request.cwd = config.workdir;
  request.timeout_ms = static_cast<uint32_t>(timeout.count());
  request.as_root = true;
  return request;
}

asio::awaitable<void> run_init(AgentClient& agent, VmProcess& vm, const MachineConfig& config) {
  for (const std::string& command : config.init) {
    log_line("init: " + command);
    std::string err;
    ExecCallbacks output;
    output.on_stdout = [](std::string_view chunk) { std::fwrite(chunk.data(), 1, chunk.size(), stdout); };
    output.on_stderr = [&err](std::string_view chunk) {
      std::fwrite(chunk.data(), 1, chunk.size(), stdout);
      err.append(chunk);
    };
    auto request = guest_command(config, {"/bin/sh", "-c", command}, kInitTimeout);
    agent::ExecResult r =
        co_await guarded(agent.exec(request, output), vm, kInitTimeout + std::chrono::seconds(10),
                         "running init command '" + command + "'", ErrorKind::timeout);
    std::fflush(stdout);
    if (r.exit_code != 0 || r.timed_out) {
      std::string how = r.timed_out ? "timed out" : r.signal ? "was killed by signal " + std::to_string(*r.signal)
                                                             : "exited with " + std::to_string(r.exit_code.value_or(-1));
      err = first_line(err.substr(0, 300));
      throw Error(ErrorKind::boot_failed, "init command '" + command + "' " + how + (err.empty() ? "" : ": " + err));
    }
  }
}

// Graceful stop: the guest flushes its page cache to the disk, then QEMU (SIGTERM) closes
// the qcow2 image cleanly; a guest that does not answer is killed after the deadlines.
asio::awaitable<void> stop_gracefully(AgentClient& agent, VmProcess& vm, const MachineConfig& config) {
  try {
    auto request = guest_command(config, {"sync"}, kSyncTimeout);
    co_await guarded(agent.exec(request, {}), vm, kSyncTimeout, "syncing the guest's disks", ErrorKind::timeout);
  } catch (const std::exception& e) {
    log_line(std::string("stop: sync failed, stopping anyway: ") + first_line(e.what()));
  }
  ::kill(vm.pid(), SIGTERM);
  auto ex = co_await asio::this_coro::executor;
  ExitWatch exit_watch(ex, vm);
  asio::steady_timer timer(ex, kQuitTimeout);
  auto outcome = co_await (exit_watch.wait() ||
                           timer.async_wait(asio::use_awaitable));
  if (outcome.index() == 1) log_line("stop: QEMU did not quit in time; killed");
}

using EndChannel = asio::experimental::channel<void(boost::system::error_code, std::string)>;

// Returns the error that ended the machine (empty after a requested stop).
asio::awaitable<std::string> supervise(const SupervisorOptions& options, ReadyPipe& ready) {
  auto ex = co_await asio::this_coro::executor;
  asio::signal_set signals(ex, SIGTERM, SIGINT);
  MachineStore store;
  const MachineRecord record = store.require(options.name);
  const fs::path vm_dir = run_dir() / ("vm-machine-" + std::to_string(::getpid()));
  ensure_private_dir(vm_dir);
  const VmConfig config = vm_config(record, options.accel, vm_dir);
  // Published ports are bound before QEMU starts: a port taken since `create` fails the start.
  const net::NetPolicy network = net::make_policy(record.config.network);
  auto listeners = net::bind_published_ports(ex, network.ports);
  log_line("starting (" + std::string(options.accel.name()) + ", " + std::to_string(config.vcpus) + " vCPU, " +
           std::to_string(config.memory_mib) + " MiB)");
  const auto boot_timeout = default_boot_timeout(options.accel);
  MachineVm launched = co_await launch_machine_vm(record.name, config, vm_dir, boot_timeout, log_line);
  auto& vm = launched.process;
  store.db().set_running(record.name, ::getpid(), process_start_time(::getpid()), vm->pid(),
                         process_start_time(vm->pid()), now_iso8601());

  const auto deadline = Clock::now() + boot_timeout;
  auto socket = co_await guarded(connect_when_listening(config.agent_socket), *vm, time_left(deadline),
                                 "waiting for QEMU to start", ErrorKind::boot_failed);
  auto guest = FrameConnection::create(std::move(socket));
  if (launched.parked) {
    co_await guarded(unpark(*guest), *vm, time_left(deadline), "finishing the boot", ErrorKind::boot_failed);
  }
  std::string hello = co_await guarded(guest_hello(*guest), *vm, time_left(deadline), "waiting for the guest agent",
                                       ErrorKind::boot_failed);
  std::shared_ptr<net::Gateway> gateway;
  if (network.enabled) {
    co_await guarded(guest_net_up(*guest), *vm, time_left(deadline), "setting up the guest's network",
                     ErrorKind::boot_failed);
    gateway = net::Gateway::create(ex, network, net::GatewayIdentity{config.name, record.name}, std::move(listeners));
    gateway->start([guest](agent::FrameType type, uint32_t id, std::string_view payload) {
      guest->send(type, id, payload);
    });
  }
  auto relay = AgentRelay::create(guest, hello);
  if (gateway) relay->set_net_handler([gateway](const agent::Frame& f) { gateway->handle(f); });
  asio::co_spawn(ex, relay->accept_clients(listen_private(ex, relay_socket(record.name))), asio::detached);
  EndChannel guest_ended(ex, 1);
  asio::co_spawn(ex, relay->run_guest(), [&guest_ended](std::exception_ptr, std::string reason) {
    guest_ended.try_send(boost::system::error_code{}, std::move(reason));
  });

  // The supervisor's own requests (init, sync) go through the relay like everyone else's.
  auto agent = AgentClient::create(co_await connect_when_listening(relay_socket(record.name)));
  co_await agent->hello();
  co_await run_init(*agent, *vm, record.config);
  ready.send("ok");
  log_line("ready");

  auto outcome = co_await (signals.async_wait(asio::use_awaitable) || guest_ended.async_receive(asio::use_awaitable));
  std::string error;
  if (outcome.index() == 0) {
    log_line("stopping (signal " + std::to_string(std::get<0>(outcome)) + ")");
    co_await stop_gracefully(*agent, *vm, record.config);
  } else {
    std::string why = vm->describe_failure("the VM stopped unexpectedly");
    log_line(why);
    error = first_line(why);
  }
  if (gateway) gateway->close();
  relay->close();
  agent->close();
  vm->destroy();
  std::error_code ec;
  fs::remove(relay_socket(record.name), ec);
  co_return error;
}

}  // namespace

int run_supervisor(const SupervisorOptions& options) {
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ReadyPipe ready(options.ready_fd);
  asio::io_context ctx;
  std::string error;
  asio::co_spawn(ctx, supervise(options, ready), [&](std::exception_ptr e, std::string ended_by) {
    error = std::move(ended_by);
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log_line(ex.what());
        error = first_line(ex.what());
      }
    }
    ctx.stop();
  });
  ctx.run();
  ready.send((error.empty() ? "the machine stopped while starting" : error) + " (details in " +
             (machine_dir(options.name) / "supervisor.log").string() + ")");
  std::error_code ec;
  fs::remove(relay_socket(options.name), ec);
  try {
    StateDb(vial_home() / "state.db").set_stopped(options.name, error);
  } catch (const std::exception& e) {
    log_line(std::string("could not record the stop: ") + e.what());
  }
  log_line(error.empty() ? "stopped" : "stopped: " + error);
  return error.empty() ? 0 : 1;
}

}  // namespace vial::machine
