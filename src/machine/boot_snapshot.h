// Named machines start from a boot snapshot: a template (vm/template.h) of the machine's
// kernel and initramfs, saved while the guest is parked before its root disk. A restore gets
// the machine's own disk, and the reseed that unparks the guest lets it mount that disk and
// finish booting: a fraction of a cold boot.
//
// Snapshots live in $VIAL_HOME/templates as `machine-<files>-<N>cpu-<M>M-<accel>-<key>`, where
// <files> names the kernel and initramfs by inode: machines created from one image hard-link
// those, so they share one snapshot (and its page cache) per shape. A new QEMU or kernel
// command line replaces the snapshot; deleting the last machine that uses one removes it.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "machine/frame_connection.h"
#include "vm/vm_process.h"

namespace vial::machine {

struct MachineVm {
  std::unique_ptr<VmProcess> process;
  bool parked = false;  // restored from the boot snapshot: unpark() it once connected
};

// Starts QEMU for machine `name`: restored from its boot snapshot (built first when missing),
// or booted cold when the snapshot can't be built or restored (`log` gets one line saying why).
asio::awaitable<MachineVm> launch_machine_vm(const std::string& name, const VmConfig& config,
                                             const std::filesystem::path& vm_dir,
                                             std::chrono::milliseconds boot_timeout,
                                             std::function<void(const std::string&)> log);

// Finishes a restored machine's boot: sends the reseed (fresh entropy, the host's time) that
// unparks the guest and waits for its `ok`, which comes once the root disk is mounted.
asio::awaitable<void> unpark(FrameConnection& guest);

// Removes the boot snapshots no machine's kernel and initramfs lead to any more.
void prune_boot_snapshots();

}  // namespace vial::machine
