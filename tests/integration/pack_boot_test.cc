// A VM boots from the parts of an extracted pack whose root filesystem is not vial's: a bare
// busybox tree gets the vial agent (PID 1 from the pack's initramfs) and runs a command.
#include <gtest/gtest.h>

#include "cli_harness.h"
#include "pack/pack.h"
#include "pack_test_util.h"
#include "util/event_loop.h"
#include "util/paths.h"
#include "vm/guest_boot.h"
#include "vm/host_tsc.h"

namespace vial::test {
namespace {

namespace fs = std::filesystem;

class PackBoot : public VialHomeTest {};

TEST_F(PackBoot, BusyboxPackRunsACommand) {
  VIAL_REQUIRE_IMAGE("python");
  const fs::path work = home() / "work";
  make_busybox_rootfs(work / "rootfs");
  CliOptions opts = options();
  opts.env["VIAL_ROOTFS_HEADROOM_MIB"] = "16";
  CliResult created = vial({"pack", "create", "--image", (work / "rootfs").string(), "-o", (work / "bb.vial").string()}, opts);
  ASSERT_EQ(created.exit_code, 0) << created.describe();

  const fs::path parts = work / "parts";
  pack::PackManifest manifest = pack::extract(work / "bb.vial", parts);
  EXPECT_EQ(manifest.source.kind, "directory");

  ::setenv("VIAL_HOME", home().c_str(), 1);
  VmConfig config;
  config.accel = std::getenv("VIAL_ACCEL") && std::string(std::getenv("VIAL_ACCEL")) == "kvm"
                     ? Accel{AccelKind::kvm, "tests"}
                     : Accel{AccelKind::tcg, "tests"};
  if (config.accel.kind == AccelKind::tcg) config.tsc_khz = host_tsc_khz();
  config.name = "vial-pack-boot-test";
  config.kernel = parts / pack::kKernelPart;
  config.initramfs = parts / pack::kInitramfsPart;
  config.root_disk = parts / pack::kRootfsPart;  // this test's own copy: the guest may write it
  const fs::path vm_dir = run_dir() / "pack-boot";
  ensure_private_dir(vm_dir);
  config.agent_socket = vm_dir / "agent.sock";
  config.console_log = vm_dir / "console.log";
  config.warm_interpreters = false;

  std::string out;
  agent::ExecResult result;
  run_with_signals([&]() -> asio::awaitable<void> {
    std::vector<fs::path> owned;
    const std::vector<int> no_fds;
    RunningVm vm = co_await boot_vm(config, vm_dir, std::move(owned), std::chrono::seconds(120), no_fds);
    agent::ExecRequest request;
    request.argv = {"/bin/sh", "-c", "echo hi; cat /hello.txt; id -u"};
    ExecCallbacks callbacks;
    callbacks.on_stdout = [&](std::string_view s) { out.append(s); };
    result = co_await vm.agent->exec(request, callbacks);
    vm.process->destroy();
  });
  ::unsetenv("VIAL_HOME");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(out, "hi\nhello\n1000\n");
}

}  // namespace
}  // namespace vial::test
