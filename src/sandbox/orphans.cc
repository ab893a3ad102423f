#include "sandbox/orphans.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace vial {
namespace {

// Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot; "" if no such pid.
std::string start_time(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');  // the command name may contain spaces
  if (paren == std::string::npos) return {};
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
  }
  return field;
}

bool owner_alive(const fs::path& vm_dir) {
  std::error_code ec;
  if (!fs::exists(vm_dir / "owner", ec)) {
    // Its creator may be between mkdir and writing the owner file: give it a minute.
    auto age = fs::file_time_type::clock::now() - fs::last_write_time(vm_dir, ec);
    return !ec && age < std::chrono::minutes(1);
  }
  std::ifstream in(vm_dir / "owner");
  int pid = 0;
  std::string started;
  if (!(in >> pid >> started)) return false;
  return start_time(pid) == started;
}

void kill_stale_qemu(const fs::path& vm_dir) {
  std::ifstream in(vm_dir / "qemu.pid");
  int pid = 0;
  if (!(in >> pid) || pid <= 0) return;
  // Only a process whose command line names this VM's folder is ours to kill.
  std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
  std::string cmdline((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
  if (cmdline.find(vm_dir.string()) != std::string::npos) ::kill(pid, SIGKILL);
}

}  // namespace

void write_owner(const fs::path& vm_dir) {
  std::ofstream(vm_dir / "owner") << ::getpid() << " " << start_time(::getpid()) << "\n";
}

void write_qemu_pid(const fs::path& vm_dir, int pid) { std::ofstream(vm_dir / "qemu.pid") << pid << "\n"; }

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
