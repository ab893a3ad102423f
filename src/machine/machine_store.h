// Named persistent machines: what exists (state.db), where their files are
// ($VIAL_HOME/machines/<name>/: vmlinux, initramfs, rootfs.qcow2 (the base, hard-linked from
// the image or extracted from the pack), disk.qcow2 (its overlay), console.log,
// supervisor.log, agent.sock, lock) and whether each is running (its supervisor's and QEMU's
// pid + start time, checked against /proc, so a dead machine never shows as running).
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "machine/state_db.h"
#include "vm/accel.h"

namespace vial::machine {

enum class MachineState { created, running, stopped, error };
std::string_view to_string(MachineState state);

struct MachineStatus {
  MachineRecord record;
  MachineState state = MachineState::created;
  std::string reason;  // why, for `error`
  int pid = 0;         // QEMU's pid while running
};

std::filesystem::path machines_dir();                           // vial_home()/machines
std::filesystem::path machine_dir(const std::string& name);     // machines_dir()/name
std::filesystem::path relay_socket(const std::string& name);    // where exec/cp/shell connect

// The default image of a machine created without --from.
inline constexpr const char* kDefaultMachineImage = "python";

// How long `stop` waits for a graceful shutdown before killing the machine.
inline constexpr std::chrono::seconds kStopDeadline{30};

struct CreateOptions {
  std::string name;
  std::optional<std::filesystem::path> pack;         // --from
  std::optional<std::filesystem::path> config_file;  // --smolfile / --vialfile
  // --net, --allow-host, ... : added to the config file's network settings.
  net::NetOptions network;
};

class MachineStore final {
 public:
  // Opens $VIAL_HOME/state.db (created on first use).
  MachineStore();

  StateDb& db() { return db_; }

  // Creates the machine's folder and disk. Throws Error: invalid name, name taken, bad config...
  MachineRecord create(const CreateOptions& options);
  // The machine, or Error(not_found) "unknown machine".
  MachineRecord require(const std::string& name);
  MachineStatus status(const std::string& name);
  std::vector<MachineStatus> list();
  // Boots the machine (its supervisor runs detached) and returns once its agent is ready
  // and its init commands have run. Throws Error: already running, network requested, boot failed.
  void start(const std::string& name, const Accel& accel);
  // Graceful stop (the guest syncs its disks), forced after `deadline`. Throws if not running.
  void stop(const std::string& name, std::chrono::milliseconds deadline = kStopDeadline);
  // Deletes the machine and its files; `force` stops a running one first, else that is an error.
  void remove(const std::string& name, bool force);

 private:
  MachineStatus status_of(MachineRecord record);
  // Kills what a dead machine's record still names (supervisor, QEMU) and clears its pids.
  void stop_locked(const MachineRecord& record, std::chrono::milliseconds deadline);
  StateDb db_;
};

}  // namespace vial::machine
