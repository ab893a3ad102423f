#include "machine/boot_snapshot.h"

#include <fstream>
#include <optional>
#include <set>

#include "machine/machine_store.h"
#include "pack/manifest.h"
#include "util/paths.h"
#include "vm/agent_client.h"
#include "vm/template.h"

namespace fs = std::filesystem;

namespace vial::machine {
namespace {

// In a machine's folder when its agent can't park: says why, and spares each start a boot
// that can't succeed. A machine's agent is fixed at `create`, so this never goes stale.
constexpr const char* kUnsupportedFile = "no-boot-snapshot";
constexpr const char* kFamilyPrefix = "machine-";
constexpr size_t kFamilyHashDigits = 12;
constexpr uint32_t kUnparkId = 1;

// "machine-<hash>": the snapshots of one kernel + initramfs pair, whatever the machine's path.
std::string family(const fs::path& dir) {
  return kFamilyPrefix + stable_hash(inode_identity(dir / pack::kKernelPart) + "|" +
                                     inode_identity(dir / pack::kInitramfsPart))
                             .substr(0, kFamilyHashDigits);
}

TemplateSpec snapshot_spec(const std::string& name, const VmConfig& config) {
  TemplateSpec spec;
  spec.name = family(machine_dir(name)) + "-" + std::to_string(config.vcpus) + "cpu";
  spec.boot = config;
  spec.boot.park = true;
  spec.key = vm_shape_key(spec.boot, {});  // the files are in the name
  // A parked guest never reads its disk: any qcow2 will do (its backing file may go away).
  spec.base_disk = machine_dir(name) / pack::kRootfsPart;
  return spec;
}

}  // namespace

asio::awaitable<MachineVm> launch_machine_vm(const std::string& name, const VmConfig& config,
                                             const fs::path& vm_dir, std::chrono::milliseconds boot_timeout,
                                             std::function<void(const std::string&)> log) {
  const fs::path unsupported = machine_dir(name) / kUnsupportedFile;
  std::error_code ec;
  std::string why_cold;
  if (fs::exists(unsupported, ec)) {
    std::getline(std::ifstream(unsupported), why_cold);
  } else {
    std::optional<Template> tpl;
    try {
      const TemplateSpec spec = snapshot_spec(name, config);  // named: see the GCC 12 pitfalls in DESIGN.md
      tpl = co_await ensure_template(templates_dir(), run_dir(), spec, boot_timeout);
      log("restoring the boot snapshot");
      const std::vector<fs::path> no_owned_files;
      auto process = co_await restore_process(*tpl, config, vm_dir, no_owned_files, boot_timeout);
      co_return MachineVm{std::move(process), true};
    } catch (const ParkUnsupported& e) {
      why_cold = e.what();
      std::ofstream(unsupported) << why_cold << "\n";
    } catch (const std::exception& e) {
      why_cold = e.what();  // whole: supervisor.log is where a console tail helps
      // A snapshot that fails to restore (damaged files) is rebuilt by the next start.
      if (tpl) fs::remove_all(tpl->dir, ec);
    }
    ensure_private_dir(vm_dir);  // a failed restore took it away
  }
  log("booting cold, without the boot snapshot: " + why_cold);
  co_return MachineVm{VmProcess::launch(config, vm_dir, {}), false};
}

asio::awaitable<void> unpark(FrameConnection& guest) {
  guest.send(agent::FrameType::reseed, kUnparkId, nlohmann::json(fresh_reseed()).dump());
  for (;;) {
    auto item = co_await guest.read();
    if (!item.frame || item.frame->request_id != kUnparkId) continue;
    if (item.frame->type == agent::FrameType::ok) co_return;
    if (item.frame->type == agent::FrameType::error) {
      auto body = agent::parse_body<agent::ErrorBody>(item.frame->payload);
      throw Error(ErrorKind::boot_failed, "the restored guest could not finish its boot: " + body.message);
    }
  }
}

void prune_boot_snapshots() {
  std::error_code ec;
  std::set<std::string> used, present;
  for (const auto& e : fs::directory_iterator(machines_dir(), ec)) used.insert(family(e.path()));
  for (const auto& e : fs::directory_iterator(templates_dir(), ec)) {
    const std::string entry = e.path().filename().string();
    const size_t length = std::char_traits<char>::length(kFamilyPrefix) + kFamilyHashDigits;
    if (entry.rfind(kFamilyPrefix, 0) == 0 && entry.size() > length) present.insert(entry.substr(0, length));
  }
  for (const auto& f : present) {
    if (!used.count(f)) prune_templates(templates_dir(), f + "-", {});
  }
}

}  // namespace vial::machine
