#include "util/process.h"

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "util/error.h"

namespace vial {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

TEST(ProcessTest, SpawningAMissingProgramSaysToInstallIt) {
  try {
    Child::spawn({"vial-test-no-such-program"});
    FAIL() << "spawn of a missing program succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unavailable);
    EXPECT_THAT(e.what(), HasSubstr("vial-test-no-such-program"));
    EXPECT_THAT(e.what(), HasSubstr("install"));
  }
}

TEST(ProcessTest, RunCaptureReturnsOutputAndExitCode) {
  auto r = run_capture({"sh", "-c", "echo out; echo err >&2; exit 7"}, 10s);
  EXPECT_EQ(r.exit_code, 7);
  EXPECT_FALSE(r.timed_out);
  EXPECT_THAT(r.output, HasSubstr("out\n"));
  EXPECT_THAT(r.output, HasSubstr("err\n"));
}

TEST(ProcessTest, RunCaptureKillsAtTheDeadline) {
  auto start = std::chrono::steady_clock::now();
  auto r = run_capture({"sh", "-c", "echo begun; exec sleep 30"}, 300ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_THAT(r.output, HasSubstr("begun"));
  EXPECT_LT(took, 5s);
}

TEST(ProcessTest, ChildDestructorKillsAndReaps) {
  pid_t pid = -1;
  {
    auto child = Child::spawn({"sleep", "30"});
    pid = child.pid();
    ASSERT_GT(pid, 0);
    EXPECT_TRUE(child.running());
    EXPECT_GE(child.pidfd(), 0);
  }
  // Reaped, not a zombie: the pid no longer exists for us.
  errno = 0;
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(ProcessTest, WaitAndSignal) {
  auto child = Child::spawn({"sh", "-c", "exit 4"});
  int status = child.wait();
  EXPECT_EQ(shell_exit_code(status), 4);
  EXPECT_FALSE(child.running());
  child.kill_and_reap();  // no-op once reaped

  auto sleeper = Child::spawn({"sleep", "30"});
  sleeper.signal(SIGTERM);
  EXPECT_EQ(shell_exit_code(sleeper.wait()), 128 + SIGTERM);
}

TEST(ProcessTest, FindProgram) {
  EXPECT_TRUE(find_program("sh").has_value());
  EXPECT_FALSE(find_program("vial-test-no-such-program").has_value());
  EXPECT_TRUE(find_program("/bin/sh").has_value());
  EXPECT_FALSE(find_program("/nonexistent/sh").has_value());
}

}  // namespace
}  // namespace vial
