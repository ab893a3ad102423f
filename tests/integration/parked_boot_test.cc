// A guest booted with VmConfig::park in a real VM (TCG): it stops before its root disk, says
// so in hello, refuses work, and finishes booting when the host's reseed arrives. Named
// machines snapshot this state (machine/boot_snapshot.h).
#include "images/image_store.h"
#include "storage/pristine_overlays.h"
#include "util/paths.h"
#include "vm/guest_boot.h"
#include "vm/host_tsc.h"
#include "vm_manager_harness.h"

namespace vial::test {
namespace {

agent::ExecRequest shell(const std::string& script) {
  agent::ExecRequest request;
  request.argv = {"sh", "-c", script};
  return request;
}

TEST_F(VmManagerTest, ParkedGuestWaitsForReseedBeforeItsRootDisk) {
  VIAL_REQUIRE_IMAGE("shell");
  run_engine([&]() -> asio::awaitable<void> {
    const ImageInfo image = require_image("shell");
    const fs::path vm_dir = run_dir() / "vm-parked-test";
    ensure_private_dir(vm_dir);
    const fs::path disk = overlays_dir() / "parked.qcow2";
    ensure_private_dir(overlays_dir());
    create_overlay_fast(image.rootfs, disk);
    VmConfig config;
    config.accel = settings().accel;
    config.name = "vial-parked-test";
    config.kernel = image.kernel;
    config.initramfs = image.initramfs;
    config.root_disk = disk;
    config.agent_socket = vm_dir / "agent.sock";
    config.console_log = vm_dir / "console.log";
    config.warm_interpreters = false;
    config.park = true;
    if (config.accel.kind == AccelKind::tcg) config.tsc_khz = host_tsc_khz();
    const std::vector<fs::path> owned = {disk};
    const std::vector<int> no_fds;
    RunningVm vm = co_await boot_vm(config, vm_dir, owned, 120s, no_fds);

    auto hello = co_await vm.agent->hello();
    EXPECT_TRUE(hello.parked);
    std::string refused;
    try {
      co_await vm.agent->exec(shell("true"), {});
    } catch (const Error& e) {
      refused = e.what();
    }
    EXPECT_NE(refused.find("parked"), std::string::npos) << "an exec while parked: '" << refused << "'";

    co_await vm.agent->reseed();
    hello = co_await vm.agent->hello();
    EXPECT_FALSE(hello.parked);
    std::string out;
    ExecCallbacks output;
    output.on_stdout = [&out](std::string_view chunk) { out.append(chunk); };
    auto result = co_await vm.agent->exec(shell("test -d /usr/bin && hostname && stat -c %m /"), output);
    EXPECT_EQ(result.exit_code, 0);
    EXPECT_EQ(out, "vial\n/\n") << "the root disk is mounted after the unpark";
    vm.shut_down();
  });
}

}  // namespace
}  // namespace vial::test
