#include "sandbox/orphans.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "util/process.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace vial {
namespace {

class OrphansTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vial-orphans-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    fs::create_directories(run_dir());
    fs::create_directories(overlays_dir());
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path run_dir() const { return root_ / "run"; }
  fs::path overlays_dir() const { return root_ / "overlays"; }

  // A VM folder and its overlay, as the runner lays them out.
  fs::path make_vm(const std::string& name) {
    fs::create_directories(run_dir() / name);
    std::ofstream(overlays_dir() / (name + ".qcow2")) << "qcow2";
    std::ofstream(run_dir() / name / "agent.sock") << "";
    return run_dir() / name;
  }

  // Owned by a process that is gone: our pid with a start time that is not ours.
  void make_dead_owner(const fs::path& vm_dir) { std::ofstream(vm_dir / "owner") << ::getpid() << " 1\n"; }

  fs::path root_;
};

TEST_F(OrphansTest, DeadOwnersFolderAndOverlayAreRemoved) {
  auto dir = make_vm("vm-1-0");
  make_dead_owner(dir);
  EXPECT_EQ(reap_orphans(run_dir(), overlays_dir()), 1);
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(fs::exists(overlays_dir() / "vm-1-0.qcow2"));
}

TEST_F(OrphansTest, ExitedOwnerProcessIsDead) {
  auto dir = make_vm("vm-2-0");
  pid_t pid = ::fork();
  if (pid == 0) {
    write_owner(dir);
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_EQ(reap_orphans(run_dir(), overlays_dir()), 1);
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(fs::exists(overlays_dir() / "vm-2-0.qcow2"));
}

TEST_F(OrphansTest, LiveOwnersFolderIsKept) {
  auto dir = make_vm("vm-3-0");
  write_owner(dir);
  EXPECT_EQ(reap_orphans(run_dir(), overlays_dir()), 0);
  EXPECT_TRUE(fs::exists(dir / "agent.sock"));
  EXPECT_TRUE(fs::exists(overlays_dir() / "vm-3-0.qcow2"));
}

TEST_F(OrphansTest, FreshFolderWithoutOwnerIsKeptAndOtherNamesIgnored) {
  make_vm("vm-4-0");  // its creator is between mkdir and write_owner
  fs::create_directories(run_dir() / "not-a-vm");
  make_dead_owner(run_dir() / "not-a-vm");
  EXPECT_EQ(reap_orphans(run_dir(), overlays_dir()), 0);
  EXPECT_TRUE(fs::exists(run_dir() / "vm-4-0"));
  EXPECT_TRUE(fs::exists(run_dir() / "not-a-vm"));
}

TEST_F(OrphansTest, StaleQemuIsKilledOnlyIfItNamesTheFolder) {
  auto dir = make_vm("vm-5-0");
  make_dead_owner(dir);
  // Stands in for QEMU: its command line names the VM folder.
  auto stale = Child::spawn({"sh", "-c", "sleep 30; true", (dir / "qemu").string()});
  write_qemu_pid(dir, stale.pid());
  auto other_dir = make_vm("vm-5-1");
  make_dead_owner(other_dir);
  // A reused pid: some unrelated process.
  auto unrelated = Child::spawn({"sleep", "30"});
  write_qemu_pid(other_dir, unrelated.pid());

  EXPECT_EQ(reap_orphans(run_dir(), overlays_dir()), 2);
  int status = stale.wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(unrelated.try_wait().has_value()) << "an unrelated process was killed";
  EXPECT_TRUE(fs::is_empty(run_dir()));
  EXPECT_TRUE(fs::is_empty(overlays_dir()));
}

}  // namespace
}  // namespace vial
