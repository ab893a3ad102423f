// Builds the argv of one `qemu-system-x86_64 -M microvm` guest. Pure: no I/O, unit-tested.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "vm/accel.h"

namespace vial {

inline constexpr unsigned kMinMemoryMib = 64;
inline constexpr unsigned kDefaultMemoryMib = 256;
// TCG translation cache per VM; QEMU's default of 1 GiB exhausts host memory with many VMs.
inline constexpr unsigned kTcgTranslationCacheMib = 64;

struct VmConfig {
  Accel accel;
  std::string name;  // shown in `ps` as -name, e.g. vial-run-1234
  std::filesystem::path kernel;
  std::filesystem::path initramfs;
  std::filesystem::path root_disk;  // qcow2; the guest writes to it
  std::filesystem::path agent_socket;  // QEMU listens here; the host connects
  std::filesystem::path console_log;   // the guest's serial console
  unsigned memory_mib = kDefaultMemoryMib;
  unsigned vcpus = 1;
  std::string qemu_binary = "qemu-system-x86_64";
  // Guest RAM in this file instead of anonymous memory (templates and their clones).
  // Shared: writes go to the file (the template). Private: copy-on-write (clones), so many
  // clones share the file's page cache and never see each other's writes.
  std::filesystem::path memory_file;
  bool memory_shared = false;
  // QMP over a socket QEMU inherits already connected, as this fd number (see
  // SpawnOptions::pass_fds); -1 for none. Not a listening socket: QEMU 7.2 can read a client
  // that connects while its monitor starts up from two threads at once and tear its commands.
  int qmp_fd = -1;
  // Start paused, waiting for QMP `migrate-incoming` (clones restored from a template).
  bool incoming = false;
  // Let the agent start its warm interpreters (fork servers). Off for one-shot cold boots,
  // where they would only compete with the one program for the vCPU.
  bool warm_interpreters = true;
  // Park the guest before its root disk (kernel command line vial.park=1; see
  // HelloBody::parked): for boot snapshots, which any disk can then be given to.
  bool park = false;
  // Host TSC rate (see host_tsc.h). IMPORTANT: set it for every TCG guest: with 0 the guest
  // calibrates against the emulated PIT, which can hang its boot on a busy host. KVM: 0.
  uint64_t tsc_khz = 0;
};

// Identifies an installed QEMU build ("path size mtime") without running it: part of every
// cache key that QEMU's behaviour invalidates (KVM verdicts, templates). Empty if not found.
std::string qemu_identity(const std::string& binary = "qemu-system-x86_64");

// Kernel command line: quiet boot straight into the agent; a panic ends the VM at once.
std::string kernel_cmdline(const VmConfig& config);
// QEMU's -cpu for this VM.
std::string guest_cpu(const VmConfig& config);

// Throws Error(invalid_input) on a config that cannot boot (no kernel path, memory too small...).
std::vector<std::string> build_qemu_argv(const VmConfig& config);

}  // namespace vial
