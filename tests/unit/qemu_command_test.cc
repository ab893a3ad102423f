#include "vm/qemu_command.h"

#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "util/error.h"

namespace vial {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

VmConfig base_config(AccelKind kind = AccelKind::tcg) {
  VmConfig c;
  c.accel = {kind, "test"};
  c.name = "vial-vm-1-0";
  c.kernel = "/images/python/vmlinux";
  c.initramfs = "/images/python/initramfs.img";
  c.root_disk = "/home/run/overlays/vm-1-0.qcow2";
  c.agent_socket = "/home/run/vm-1-0/agent.sock";
  c.console_log = "/home/run/vm-1-0/console.log";
  return c;
}

// The value following `flag`, for flags given once.
std::string value_of(const std::vector<std::string>& argv, const std::string& flag) {
  auto it = std::find(argv.begin(), argv.end(), flag);
  if (it == argv.end() || it + 1 == argv.end()) return "<absent>";
  return *(it + 1);
}

// All values of a repeated flag (-device, -chardev...).
std::vector<std::string> values_of(const std::vector<std::string>& argv, const std::string& flag) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) out.push_back(argv[i + 1]);
  }
  return out;
}

bool has(const std::vector<std::string>& argv, const std::string& arg) {
  return std::find(argv.begin(), argv.end(), arg) != argv.end();
}

TEST(QemuCommandTest, MicrovmWithoutDefaultsOrNetwork) {
  auto argv = build_qemu_argv(base_config());
  EXPECT_EQ(argv.front(), "qemu-system-x86_64");
  EXPECT_EQ(value_of(argv, "-M"), "microvm");
  EXPECT_TRUE(has(argv, "-nodefaults"));
  EXPECT_TRUE(has(argv, "-no-user-config"));
  EXPECT_EQ(value_of(argv, "-nic"), "none");
  EXPECT_EQ(value_of(argv, "-name"), "vial-vm-1-0");
  EXPECT_EQ(value_of(argv, "-m"), "256");
  EXPECT_EQ(value_of(argv, "-smp"), "1");
  EXPECT_EQ(value_of(argv, "-kernel"), "/images/python/vmlinux");
  EXPECT_EQ(value_of(argv, "-initrd"), "/images/python/initramfs.img");
  for (const auto& dev : values_of(argv, "-device")) {
    EXPECT_THAT(dev, Not(HasSubstr("net"))) << "no network device at all";
    EXPECT_THAT(dev, Not(HasSubstr("pci"))) << "microvm has no PCI";
  }
  EXPECT_FALSE(has(argv, "-netdev"));
  EXPECT_THAT(value_of(argv, "-drive"), HasSubstr("file=/home/run/overlays/vm-1-0.qcow2,format=qcow2"));
}

TEST(QemuCommandTest, TcgUsesMultiThreadedTcgWithASmallTranslationCache) {
  auto argv = build_qemu_argv(base_config(AccelKind::tcg));
  EXPECT_EQ(value_of(argv, "-accel"), "tcg,thread=multi,tb-size=64");
  // 5-level paging makes every emulated page walk longer.
  EXPECT_EQ(value_of(argv, "-cpu"), "max,la57=off");
}

TEST(QemuCommandTest, KvmUsesKvm) {
  auto argv = build_qemu_argv(base_config(AccelKind::kvm));
  EXPECT_EQ(value_of(argv, "-accel"), "kvm");
  EXPECT_EQ(value_of(argv, "-cpu"), "host");
}

TEST(QemuCommandTest, MemoryBelowMinimumIsRejected) {
  auto c = base_config();
  c.memory_mib = 63;
  try {
    build_qemu_argv(c);
    FAIL() << "63 MiB accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
    EXPECT_THAT(e.what(), HasSubstr("64"));
  }
  c.memory_mib = 64;
  EXPECT_EQ(value_of(build_qemu_argv(c), "-m"), "64");
}

TEST(QemuCommandTest, MissingPathsAreRejected) {
  auto c = base_config();
  c.kernel.clear();
  EXPECT_THROW(build_qemu_argv(c), Error);
  c = base_config();
  c.root_disk.clear();
  EXPECT_THROW(build_qemu_argv(c), Error);
}

TEST(QemuCommandTest, CommasInPathsAreDoubled) {
  auto c = base_config();
  c.root_disk = "/home/a,b/disk.qcow2";
  c.agent_socket = "/home/a,b/agent.sock";
  c.console_log = "/home/a,b/console.log";
  auto argv = build_qemu_argv(c);
  EXPECT_THAT(value_of(argv, "-drive"), HasSubstr("file=/home/a,,b/disk.qcow2,"));
  auto chardevs = values_of(argv, "-chardev");
  ASSERT_EQ(chardevs.size(), 2u);
  EXPECT_THAT(chardevs[0] + " " + chardevs[1], HasSubstr("path=/home/a,,b/agent.sock"));
  EXPECT_THAT(chardevs[0] + " " + chardevs[1], HasSubstr("path=/home/a,,b/console.log"));
}

TEST(QemuCommandTest, TscEarlyKhzOnlyWhenKnown) {
  auto c = base_config();
  EXPECT_THAT(kernel_cmdline(c), Not(HasSubstr("tsc_early_khz")));
  EXPECT_THAT(value_of(build_qemu_argv(c), "-append"), Not(HasSubstr("tsc_early_khz")));
  c.tsc_khz = 2596520;
  EXPECT_THAT(kernel_cmdline(c), HasSubstr("tsc_early_khz=2596520"));
  EXPECT_THAT(value_of(build_qemu_argv(c), "-append"), HasSubstr("tsc_early_khz=2596520"));
}

TEST(QemuCommandTest, KernelCmdlinePanicsOutAndUsesTheSerialConsole) {
  auto line = kernel_cmdline(base_config());
  EXPECT_THAT(line, HasSubstr("console=ttyS0"));
  EXPECT_THAT(line, HasSubstr("panic=-1"));
  EXPECT_TRUE(has(build_qemu_argv(base_config()), "-no-reboot"));
}

TEST(QemuCommandTest, ParkOnlyWhenAskedAndNoVmMaySpawn) {
  VmConfig c = base_config();
  EXPECT_THAT(kernel_cmdline(c), Not(HasSubstr("vial.park")));
  EXPECT_THAT(value_of(build_qemu_argv(c), "-sandbox"), HasSubstr("spawn=deny"));
  c.park = true;
  c.memory_file = "/t/memory";
  c.memory_shared = true;  // a template build
  EXPECT_THAT(kernel_cmdline(c), HasSubstr(" vial.park=1"));
  EXPECT_THAT(value_of(build_qemu_argv(c), "-sandbox"), HasSubstr("spawn=deny"));
}

// A restore's guest kernel is in its RAM already: no kernel image to load, and none required.
TEST(QemuCommandTest, RestoresLoadNoKernel) {
  VmConfig c = base_config();
  c.incoming = true;
  c.kernel.clear();
  c.initramfs.clear();
  auto argv = build_qemu_argv(c);
  EXPECT_FALSE(has(argv, "-kernel"));
  EXPECT_FALSE(has(argv, "-initrd"));
  EXPECT_FALSE(has(argv, "-append"));
  EXPECT_EQ(value_of(argv, "-incoming"), "defer");
}

// QMP only over a socket QEMU inherits connected: a listening one races QEMU 7.2's monitor set-up.
TEST(QemuCommandTest, QmpOnlyOverAnInheritedConnectedSocket) {
  auto none = build_qemu_argv(base_config());
  EXPECT_FALSE(has(none, "-mon"));
  EXPECT_FALSE(has(none, "-qmp"));

  VmConfig c = base_config();
  c.qmp_fd = 4;
  auto argv = build_qemu_argv(c);
  EXPECT_THAT(values_of(argv, "-chardev"), ::testing::Contains("socket,id=qmp,fd=4"));
  EXPECT_EQ(value_of(argv, "-mon"), "chardev=qmp,mode=control");
  EXPECT_FALSE(has(argv, "-qmp"));
}

}  // namespace
}  // namespace vial
