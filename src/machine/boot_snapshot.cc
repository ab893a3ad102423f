#include "machine/boot_snapshot.h"

#include <fstream>
#include <optional>

#include "machine/machine_store.h"
#include "pack/manifest.h"
#include "util/paths.h"
#include "vm/agent_client.h"
#include "vm/template.h"

namespace fs = std::filesystem;

namespace vial::machine {
namespace {

// In the snapshot folder when the machine's agent can't park: says why, and spares each start
// a boot that can't succeed. The agent is fixed at `create`, so this never goes stale.
constexpr const char* kUnsupportedFile = "unsupported";
constexpr uint32_t kUnparkId = 1;

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

}  // namespace

asio::awaitable<MachineVm> launch_machine_vm(const std::string& name, const VmConfig& config,
                                             const fs::path& vm_dir, std::chrono::milliseconds boot_timeout,
                                             std::function<void(const std::string&)> log) {
  const fs::path root = machine_dir(name) / "snapshot";
  const fs::path unsupported = root / kUnsupportedFile;
  std::error_code ec;
  std::string why_cold;
  if (fs::exists(unsupported, ec)) {
    std::getline(std::ifstream(unsupported), why_cold);
  } else {
    std::optional<Template> tpl;
    try {
      TemplateSpec spec;
      spec.name = "boot";
      spec.boot = config;
      spec.boot.park = true;
      spec.key = vm_shape_key(spec.boot, {config.kernel, config.initramfs});
      spec.base_disk = machine_dir(name) / pack::kRootfsPart;  // a parked guest never reads it
      tpl = co_await ensure_template(root, run_dir(), spec, boot_timeout);
      log("restoring the boot snapshot");
      const std::vector<fs::path> no_owned_files;  // named: GCC 12 and braced lists in co_await
      auto process = co_await restore_process(*tpl, config, vm_dir, no_owned_files, boot_timeout);
      co_return MachineVm{std::move(process), true};
    } catch (const ParkUnsupported& e) {
      why_cold = e.what();
      std::ofstream(unsupported) << why_cold << "\n";
    } catch (const std::exception& e) {
      why_cold = first_line(e.what());
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

}  // namespace vial::machine
