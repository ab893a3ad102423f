// Files and processes left behind by a vial that died (SIGKILL, power loss): every VM folder
// under run/ records its owner; a folder whose owner is gone is cleaned up by the next vial.
#pragma once

#include <filesystem>
#include <string>

namespace vial {

// Marks `vm_dir` as owned by this process (pid and start time, so pid reuse can't fool us).
void write_owner(const std::filesystem::path& vm_dir);
// Records the QEMU pid of the VM in `vm_dir`.
void write_qemu_pid(const std::filesystem::path& vm_dir, int pid);

// Kills stale QEMU processes and removes the folders (and their overlays) of dead owners.
// Returns how many VMs were reaped.
int reap_orphans(const std::filesystem::path& run_dir, const std::filesystem::path& overlays_dir);

}  // namespace vial
