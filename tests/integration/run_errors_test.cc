// `vial run` with bad input or a broken host/guest: each case exits non-zero with a clear
// message on stderr, fast, without leaving a VM, a run folder or an overlay behind (the
// fixture's TearDown checks the latter).
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "cli_harness.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace vial::test {
namespace {

constexpr int kExitUsage = 2;
constexpr int kExitVialError = 125;

class RunErrorsTest : public VialHomeTest {
 protected:
  // A failure that must come before any VM boots: quick, nothing on stdout.
  void expect_fast_failure(const CliResult& r, int exit_code, const std::string& phrase) {
    EXPECT_EQ(r.exit_code, exit_code) << r.describe();
    EXPECT_NE(r.err.find(phrase), std::string::npos) << "stderr lacks '" << phrase << "': " << r.describe();
    EXPECT_EQ(r.out, "") << r.describe();
    EXPECT_LT(r.seconds, 10.0) << "a bad request must fail before booting a VM: " << r.describe();
    EXPECT_TRUE(qemu_pids_containing(home().string() + "/").empty());
  }
};

TEST_F(RunErrorsTest, UnknownLanguage) {
  auto r = vial({"run", "-l", "cobol", "-c", "DISPLAY 'HI'"});
  expect_fast_failure(r, kExitUsage, "unknown language 'cobol'");
  EXPECT_NE(r.err.find("python"), std::string::npos) << "the message lists the choices: " << r.err;
}

TEST_F(RunErrorsTest, EmptyCode) {
  expect_fast_failure(vial({"run", "-l", "python", "-c", ""}), kExitUsage, "code is empty");
  expect_fast_failure(vial({"run", "-l", "python", "-c", "  \n\t "}), kExitUsage, "code is empty");
}

TEST_F(RunErrorsTest, MissingFile) {
  auto r = vial({"run", "-l", "python", (home() / "no-such-file.py").string()});
  expect_fast_failure(r, kExitUsage, "no-such-file.py");
  EXPECT_NE(r.err.find("cannot read"), std::string::npos) << r.err;
}

TEST_F(RunErrorsTest, TimeoutOutOfRange) {
  expect_fast_failure(vial({"run", "-l", "python", "-t", "0", "-c", "print(1)"}), kExitUsage, "between 1 and 3600");
  expect_fast_failure(vial({"run", "-l", "python", "-t", "3601", "-c", "print(1)"}), kExitUsage,
                      "between 1 and 3600");
}

TEST_F(RunErrorsTest, MemoryTooSmall) {
  expect_fast_failure(vial({"run", "-l", "python", "-m", "32", "-c", "print(1)"}), kExitUsage, "at least 64");
}

TEST_F(RunErrorsTest, EnvWithoutEquals) {
  expect_fast_failure(vial({"run", "-l", "python", "-e", "NOEQUALS", "-c", "print(1)"}), kExitUsage, "KEY=VALUE");
}

TEST_F(RunErrorsTest, BogusAcceleratorIsRejected) {
  auto opts = options();
  opts.env["VIAL_ACCEL"] = "bogus";
  expect_fast_failure(vial({"run", "-l", "python", "-c", "print(1)"}, opts), kExitUsage, "VIAL_ACCEL");
}

TEST_F(RunErrorsTest, ImageNotBuiltNamesTheBuildCommand) {
  private_dir("images");  // an empty images/ folder
  auto r = vial({"run", "-l", "javascript", "-c", "console.log(1)"});
  EXPECT_NE(r.exit_code, 0);
  expect_fast_failure(r, r.exit_code, "vial image build javascript");
}

TEST_F(RunErrorsTest, QemuNotInstalled) {
  VIAL_REQUIRE_IMAGE("python");
  auto opts = options();
  opts.env["PATH"] = "/nonexistent";  // vial itself is started by absolute path
  auto r = vial({"run", "-l", "python", "-c", "print(1)"}, opts);
  expect_fast_failure(r, kExitVialError, "qemu");
  EXPECT_NE(r.err.find("install-deps"), std::string::npos) << "the message says how to install qemu: " << r.err;
}

// A guest whose initramfs is not vial's: /init is a busybox script. The kernel and root disk
// are the real python image's.
class BrokenGuestTest : public RunErrorsTest {
 protected:
  void make_image_with_init(const std::string& init_script) {
    for (const char* tool : {"/bin/busybox", "/usr/bin/cpio"}) {
      if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is needed to build a fake initramfs";
    }
    fs::path real = real_images_dir() / "python";
    fs::path dir = private_dir("images") / "python";
    fs::path root = home() / "initramfs-root";
    fs::create_directories(dir);
    fs::create_directories(root / "bin");
    fs::copy_file("/bin/busybox", root / "bin/busybox");
    std::ofstream(root / "init") << "#!/bin/busybox sh\n" << init_script;
    fs::permissions(root / "init", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
    fs::create_symlink(real / "vmlinux", dir / "vmlinux");
    fs::create_symlink(real / "rootfs.qcow2", dir / "rootfs.qcow2");
    fs::copy_file(real / "manifest.json", dir / "manifest.json");
    auto r = run_program({"/bin/sh", "-c", "cd '" + root.string() + "' && find . | cpio -o -H newc --quiet > '" +
                                               (dir / "initramfs.img").string() + "'"});
    ASSERT_EQ(r.exit_code, 0) << r.describe();
  }
};

TEST_F(BrokenGuestTest, KernelPanicFailsWithTheConsoleTail) {
  VIAL_REQUIRE_IMAGE("python");
  make_image_with_init("echo vial-test-init-exits\nexit 0\n");  // PID 1 exits: the kernel panics
  if (IsSkipped()) return;
  ASSERT_FALSE(HasFatalFailure());
  auto opts = options();
  opts.env["VIAL_BOOT_TIMEOUT"] = "60";
  auto r = vial({"run", "-l", "python", "-c", "print(1)"}, opts);
  EXPECT_EQ(r.exit_code, kExitVialError) << r.describe();
  EXPECT_EQ(r.out, "") << r.describe();
  EXPECT_LT(r.seconds, 60.0) << "a panic ends QEMU at once; vial must not wait for the boot deadline";
  EXPECT_NE(r.err.find("guest console"), std::string::npos) << r.describe();
  EXPECT_TRUE(r.err.find("Kernel panic") != std::string::npos ||
              r.err.find("Attempted to kill init") != std::string::npos)
      << "the console tail must show why the guest died: " << r.describe();
}

TEST_F(BrokenGuestTest, AgentNeverAnsweringFailsAtTheBootDeadline) {
  VIAL_REQUIRE_IMAGE("python");
  make_image_with_init("echo vial-test-init-hangs\nexec /bin/busybox sleep 100000\n");
  if (IsSkipped()) return;
  ASSERT_FALSE(HasFatalFailure());
  auto opts = options();
  opts.env["VIAL_BOOT_TIMEOUT"] = "20";
  auto r = vial({"run", "-l", "python", "-c", "print(1)"}, opts);
  EXPECT_EQ(r.exit_code, kExitVialError) << r.describe();
  EXPECT_GE(r.seconds, 19.0) << r.describe();
  EXPECT_LT(r.seconds, 40.0) << "vial must give up at the boot deadline: " << r.describe();
  EXPECT_NE(r.err.find("no answer within"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("vial-test-init-hangs"), std::string::npos)
      << "the console tail shows what the guest printed: " << r.describe();
}

}  // namespace
}  // namespace vial::test
