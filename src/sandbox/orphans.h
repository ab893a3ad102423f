// Files and processes left behind by a vial that died (SIGKILL, power loss): every VM folder
// under run/ records its owner (see VmProcess); a folder whose owner is gone is cleaned up by
// the next vial.
#pragma once

#include <filesystem>
#include <string>

#include "vm/vm_process.h"  // write_owner, write_qemu_pid: what the reaper reads

namespace vial {


// Kills stale QEMU processes and removes the folders (and their overlays) of dead owners.
// Returns how many VMs were reaped.
int reap_orphans(const std::filesystem::path& run_dir, const std::filesystem::path& overlays_dir);

}  // namespace vial
