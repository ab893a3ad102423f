#include "sandbox/orphans.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "util/process.h"
#include "vm/vm_process.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

bool owner_alive(const fs::path& vm_dir) {
  std::error_code ec;
  if (!fs::exists(vm_dir / kOwnerFile, ec)) {
    // Its creator may be between mkdir and writing the owner file: give it a minute.
    auto age = fs::file_time_type::clock::now() - fs::last_write_time(vm_dir, ec);
    return !ec && age < std::chrono::minutes(1);
  }
  std::ifstream in(vm_dir / kOwnerFile);
  int pid = 0;
  std::string started;
  if (!(in >> pid >> started)) return false;
  return process_start_time(pid) == started;
}

void kill_stale_qemu(const fs::path& vm_dir) {
  std::ifstream in(vm_dir / kQemuPidFile);
  int pid = 0;
  if (!(in >> pid) || pid <= 0) return;
  // Only a process whose command line names this VM's folder is ours to kill.
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmdline((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
  if (cmdline.find(vm_dir.string()) != std::string::npos) ::kill(pid, SIGKILL);
}

}  // namespace

int reap_orphans(const fs::path& run_dir, const fs::path& overlays_dir) {
  int reaped = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    if (!entry.is_directory(ec) || entry.path().filename().string().rfind("vm-", 0) != 0) continue;
    if (owner_alive(entry.path())) continue;
    kill_stale_qemu(entry.path());
    fs::remove(overlays_dir / (entry.path().filename().string() + ".qcow2"), ec);
    fs::remove_all(entry.path(), ec);
    ++reaped;
  }
  return reaped;
}

}  // namespace vial
