// StorageDaemon without a daemon process (seed: TestQemuStorageDaemonUnit).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "storage/storage_daemon.h"

namespace vial {
namespace {

using ::testing::HasSubstr;

TEST(StorageDaemonUnit, CreateOverlayWhenNotStartedRaisesError) {
  StorageDaemon daemon("/tmp");
  try {
    daemon.create_overlay("/fake/base.qcow2", "/fake/out.qcow2");
    FAIL() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not started"));
  }
}

TEST(StorageDaemonUnit, StopWithoutStartIsSafe) {
  StorageDaemon daemon("/tmp");
  daemon.stop();
  daemon.stop();
  EXPECT_FALSE(daemon.started());
}

TEST(StorageDaemonUnit, StartedFalseBeforeStart) {
  StorageDaemon daemon("/tmp");
  EXPECT_FALSE(daemon.started());
  EXPECT_EQ(daemon.pid(), 0);
  EXPECT_TRUE(daemon.socket_path().empty());
}

TEST(StorageDaemonUnit, ErrorClassPreservedInException) {
  StorageDaemonError error("Some error", "GenericError");
  EXPECT_EQ(error.error_class(), "GenericError");
  EXPECT_STREQ(error.what(), "Some error");
}

TEST(StorageDaemonUnit, ErrorClassDefaultsToEmpty) {
  StorageDaemonError error("Some error");
  EXPECT_TRUE(error.error_class().empty());
  // It is a vial::Error, so the CLI and the server classify it like any other failure.
  const Error& base = error;
  EXPECT_EQ(base.kind(), ErrorKind::internal);
}

}  // namespace
}  // namespace vial
