// PID-1 boot inside the VM, in steps: kernel file systems, virtio modules, root disk,
// switch_root and basic system setup, the agent's virtio-serial port. A parked boot (see
// HelloBody::parked) opens the port before the root disk, and mounts it only when told to.
// No step returns on failure: it logs a reason to the console and reboots (QEMU runs with
// -no-reboot, so the VM ends).
#pragma once

namespace vial::guest {

// /dev, /proc and /sys.
void mount_kernel_file_systems();
// The virtio transport and console drivers, and the root disk's driver if `root_disk`.
void load_virtio_drivers(bool root_disk);
// Mounts the root disk (loading its driver if needed), switches to it and mounts /tmp, /run,
// /dev/pts, /dev/shm and cgroup2; sets the hostname and brings up lo.
void mount_root_file_systems();
// Waits for the virtio-serial port named `agent` and returns it open.
int open_agent_port();

// Records a boot phase in the kernel log: `dmesg` in the guest shows it with the kernel's
// timestamp (below the console loglevel, so it costs no emulated serial output).
void boot_mark(const char* phase);

// Logs `reason` to the console and ends the VM. PID 1 must never exit.
[[noreturn]] void fatal_boot(const char* reason);

}  // namespace vial::guest
