#include "machine/machine_store.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iterator>
#include <thread>

#include <boost/asio/io_context.hpp>

#include "images/image_store.h"
#include "machine/boot_snapshot.h"
#include "machine/detach.h"
#include "machine/machine_lock.h"
#include "machine/machine_name.h"
#include "net/gateway.h"
#include "pack/pack.h"
#include "storage/pristine_overlays.h"
#include "storage/qemu_img.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"
#include "util/unique_fd.h"

namespace fs = std::filesystem;

namespace vial::machine {
namespace {

using Clock = std::chrono::steady_clock;

// sockaddr_un's path limit, terminating NUL included.
constexpr size_t kMaxSocketPath = 108;

// True while `pid` is the process that started at `start` and has not exited. A zombie
// counts as exited: where nobody reaps orphans (some containers), it lingers.
bool alive(int pid, const std::string& start) {
  if (pid <= 0 || start.empty() || process_start_time(pid) != start) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z' && stat[paren + 2] != 'X';
}

// Waits until the process is gone or `deadline` passes; true if it is gone.
bool wait_gone(int pid, const std::string& start, Clock::time_point deadline) {
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid() || !alive(pid, start)) return !alive(pid, start);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return !alive(pid, start);
    pollfd p{pidfd.get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r > 0) return true;
  }
}

void kill_if_alive(int pid, const std::string& start, int sig) {
  if (alive(pid, start)) ::kill(pid, sig);
}

// Hard link when possible (same filesystem: instant, no space); a copy otherwise. Either way
// the machine keeps its own reference, so rebuilding or removing the image can't pull the
// base out from under its disk.
void link_or_copy(const fs::path& src, const fs::path& dst) {
  std::error_code ec;
  fs::create_hard_link(src, dst, ec);
  if (ec) copy_to_new_file(src, dst);
}

void create_disk(const fs::path& dir) {
  // A relative backing file name: the machine's folder can move with $VIAL_HOME.
  create_overlay_with_qemu_img(pack::kRootfsPart, dir / "disk.qcow2");
}

// The image files go into the machine's folder under the names a pack's parts have.
void install_image(const std::string& image_name, const fs::path& dir) {
  ImageInfo image = require_image(image_name);
  link_or_copy(image.kernel, dir / pack::kKernelPart);
  link_or_copy(image.initramfs, dir / pack::kInitramfsPart);
  link_or_copy(image.rootfs, dir / pack::kRootfsPart);
}

// The pack's parts go into the machine's folder; its run defaults (from a Docker image's
// config) apply where the machine's config says nothing.
void install_pack(const fs::path& pack_path, const fs::path& dir, MachineConfig& config) {
  pack::PackManifest manifest = pack::extract(pack_path, dir);
  for (const std::string& kv : manifest.defaults.env) {
    auto [key, value] = split_env(kv, pack_path.string() + ": default env");
    config.env.try_emplace(key, value);
  }
  if (config.workdir.empty()) config.workdir = manifest.defaults.workdir;
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

fs::path state_db_path() {
  ensure_private_dir(vial_home());
  return vial_home() / "state.db";
}

}  // namespace

std::string_view to_string(MachineState state) {
  switch (state) {
    case MachineState::created: return "created";
    case MachineState::running: return "running";
    case MachineState::stopped: return "stopped";
    case MachineState::error: return "error";
  }
  return "error";
}

fs::path machines_dir() { return vial_home() / "machines"; }
fs::path machine_dir(const std::string& name) { return machines_dir() / name; }
fs::path relay_socket(const std::string& name) { return machine_dir(name) / "agent.sock"; }

MachineStore::MachineStore() : db_(state_db_path()) {}

namespace {
// Flags add to what the config file says; the result is validated as a whole.
void merge_network(net::NetOptions& into, const net::NetOptions& flags) {
  into.net = into.net || flags.net;
  auto append = [](std::vector<std::string>& a, const std::vector<std::string>& b) { a.insert(a.end(), b.begin(), b.end()); };
  append(into.allow_hosts, flags.allow_hosts);
  append(into.allow_cidrs, flags.allow_cidrs);
  append(into.add_hosts, flags.add_hosts);
  append(into.ports, flags.ports);
  net::NetPolicy policy = net::make_policy(into);
  // A host port taken now is an error now, not at the first start (it is bound again then).
  asio::io_context probe;
  net::bind_published_ports(probe.get_executor(), policy.ports);
}
}  // namespace

MachineRecord MachineStore::create(const CreateOptions& options) {
  validate_name(options.name);
  if (relay_socket(options.name).string().size() >= kMaxSocketPath) {
    throw Error(ErrorKind::invalid_input, "name '" + options.name + "' is too long for a socket under " +
                                              machines_dir().string() + ": use a shorter name");
  }
  MachineRecord record;
  record.name = options.name;
  if (options.config_file) record.config = load_machine_config(*options.config_file);
  merge_network(record.config.network, options.network);
  if (options.pack) {
    record.image = fs::absolute(*options.pack).lexically_normal().string();
  } else {
    record.image = kDefaultMachineImage;
    require_image(record.image);
  }
  record.created_at = now_iso8601();
  ensure_private_dir(machines_dir());
  db_.insert(record);  // the database decides who gets a name
  const fs::path dir = machine_dir(record.name);
  try {
    std::error_code ec;
    fs::remove_all(dir, ec);  // left by a create that crashed before its cleanup
    ensure_private_dir(dir);
    if (options.pack) {
      install_pack(*options.pack, dir, record.config);
      db_.set_config(record.name, record.config);
    } else {
      install_image(record.image, dir);
    }
    create_disk(dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    db_.remove(record.name);
    throw;
  }
  return record;
}

MachineRecord MachineStore::require(const std::string& name) {
  validate_name(name);
  auto record = db_.find(name);
  if (!record) {
    throw Error(ErrorKind::not_found,
                "unknown machine '" + name + "': `vial machine ls` lists them, `vial machine create` makes one");
  }
  return *record;
}

MachineStatus MachineStore::status_of(MachineRecord record) {
  MachineStatus s;
  const MachineRecord& r = record;
  if (alive(r.supervisor_pid, r.supervisor_start)) {
    if (r.qemu_pid == 0 || alive(r.qemu_pid, r.qemu_start)) {
      s.state = MachineState::running;
      s.pid = r.qemu_pid;
    } else {
      s.state = MachineState::error;
      s.reason = "QEMU (pid " + std::to_string(r.qemu_pid) + ") exited; the machine is shutting down";
    }
  } else if (r.supervisor_pid != 0) {
    s.state = MachineState::error;
    s.reason = "the machine's supervisor (pid " + std::to_string(r.supervisor_pid) +
               ") died; see " + (machine_dir(r.name) / "supervisor.log").string();
  } else if (!r.last_error.empty()) {
    s.state = MachineState::error;
    s.reason = r.last_error;
  } else {
    s.state = r.started_at.empty() ? MachineState::created : MachineState::stopped;
  }
  s.record = std::move(record);
  return s;
}

MachineStatus MachineStore::status(const std::string& name) { return status_of(require(name)); }

std::vector<MachineStatus> MachineStore::list() {
  std::vector<MachineStatus> out;
  for (auto& record : db_.list()) out.push_back(status_of(std::move(record)));
  return out;
}

void MachineStore::start(const std::string& name, const Accel& accel) {
  require(name);
  MachineLock lock(machine_dir(name) / "lock");
  MachineStatus s = status(name);  // again, under the lock
  if (s.state == MachineState::running) {
    throw Error(ErrorKind::conflict, "machine '" + name + "' is already running");
  }
  stop_locked(s.record, std::chrono::seconds(5));  // leftovers of a run that died
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("pipe", errno);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  const fs::path self = fs::read_symlink("/proc/self/exe");
  spawn_daemon({self.string(), "machine", "__supervise", "--accel", accel.name(), "--ready-fd", "3", name},
               machine_dir(name) / "supervisor.log", write_end.get());
  write_end.reset();
  // The supervisor answers "ok" once the machine is ready, or why it failed; EOF otherwise.
  std::string answer = read_all(read_end.get());
  if (answer.starts_with("ok")) return;
  if (answer.empty()) {
    answer = "its supervisor exited without saying why; see " + (machine_dir(name) / "supervisor.log").string();
  }
  throw Error(ErrorKind::boot_failed, "machine '" + name + "' did not start: " + answer);
}

void MachineStore::stop_locked(const MachineRecord& r, std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  // SIGTERM asks the supervisor for a graceful stop: the guest syncs, QEMU quits.
  kill_if_alive(r.supervisor_pid, r.supervisor_start, SIGTERM);
  if (!wait_gone(r.supervisor_pid, r.supervisor_start, until)) {
    kill_if_alive(r.supervisor_pid, r.supervisor_start, SIGKILL);
  }
  kill_if_alive(r.qemu_pid, r.qemu_start, SIGKILL);
  const auto grace = Clock::now() + std::chrono::seconds(5);
  wait_gone(r.supervisor_pid, r.supervisor_start, grace);
  wait_gone(r.qemu_pid, r.qemu_start, grace);
  if (r.supervisor_pid != 0) db_.set_stopped(r.name, "");
}

void MachineStore::stop(const std::string& name, std::chrono::milliseconds deadline) {
  require(name);
  MachineLock lock(machine_dir(name) / "lock");
  MachineStatus s = status(name);
  if (s.state != MachineState::running) {
    throw Error(ErrorKind::conflict, "machine '" + name + "' is not running (it is " +
                                              std::string(to_string(s.state)) + ")");
  }
  stop_locked(s.record, deadline);
}

void MachineStore::remove(const std::string& name, bool force) {
  require(name);
  MachineLock lock(machine_dir(name) / "lock");
  MachineStatus s = status(name);
  if (s.state == MachineState::running && !force) {
    throw Error(ErrorKind::conflict,
                "machine '" + name + "' is running: stop it first, or delete with -f to stop it");
  }
  stop_locked(s.record, kStopDeadline);
  db_.remove(name);
  std::error_code ec;
  fs::remove_all(machine_dir(name), ec);
  if (ec) throw Error(ErrorKind::internal, "could not remove " + machine_dir(name).string() + ": " + ec.message());
  prune_boot_snapshots();
}

}  // namespace vial::machine
