// PID-1 boot inside the VM: mounts, virtio modules, root disk, switch_root, basic system
// setup, then finding the agent's virtio-serial port.
#pragma once

namespace vial::guest {

// Boots the system and returns the open agent port. Never returns on failure: it logs a
// reason to the console and reboots (QEMU runs with -no-reboot, so the VM ends).
int boot_as_init();

// Records a boot phase in the kernel log: `dmesg` in the guest shows it with the kernel's
// timestamp (below the console loglevel, so it costs no emulated serial output).
void boot_mark(const char* phase);

// Logs `reason` to the console and ends the VM. PID 1 must never exit.
[[noreturn]] void fatal_boot(const char* reason);

}  // namespace vial::guest
