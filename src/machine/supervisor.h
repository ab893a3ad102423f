// The process that is a running machine (`vial machine __supervise NAME`, started detached by
// MachineStore::start): it boots QEMU from the machine's disk, runs the config's init
// commands, relays the agent protocol on machines/<name>/agent.sock for any number of
// clients, and on SIGTERM stops gracefully (the guest syncs its disks, QEMU quits cleanly).
// If QEMU dies, it records why in state.db (the machine shows as `error`) and exits.
#pragma once

#include <string>

#include "vm/accel.h"

namespace vial::machine {

struct SupervisorOptions {
  std::string name;
  Accel accel;
  // Where to report readiness: "ok\n", or the reason the machine failed to start; then closed.
  int ready_fd = -1;
};

// Runs the machine until it stops; returns the process exit code (0 after a requested stop).
int run_supervisor(const SupervisorOptions& options);

}  // namespace vial::machine
