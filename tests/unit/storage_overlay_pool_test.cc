// OverlayPool logic that needs no daemon (seed: TestOverlayPoolPureLogic, first half).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "storage/overlay_pool.h"

namespace vial {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class OverlayPoolUnit : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vial-pool-unit-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    options_.daemon_run_parent = dir_ / "run";
    options_.pristine_dir = dir_ / "pristine";
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  OverlayPoolOptions options_;
};

TEST_F(OverlayPoolUnit, PoolSizeZeroDisablesPool) {
  OverlayPool pool(0, dir_ / "pool", options_);
  EXPECT_EQ(pool.pool_size(), 0);
}

TEST_F(OverlayPoolUnit, PoolSizeCalculation) {
  EXPECT_EQ(kOverlayPoolSizeRatio, 0.5);
  EXPECT_EQ(OverlayPool(10, dir_ / "pool", options_).pool_size(), 5);
  EXPECT_EQ(OverlayPool(100, dir_ / "pool", options_).pool_size(), 50);
  EXPECT_EQ(OverlayPool(1, dir_ / "pool", options_).pool_size(), 0);
  EXPECT_EQ(OverlayPool(3, dir_ / "pool", options_).pool_size(), 1);
}

TEST_F(OverlayPoolUnit, NegativePoolSizeStoredAsGiven) {
  OverlayPool pool(-10, dir_ / "pool", options_);
  EXPECT_EQ(pool.pool_size(), -5);  // stored as computed; treated as disabled by start()
}

TEST_F(OverlayPoolUnit, AcquireBeforeStartFails) {
  OverlayPool pool(10, dir_ / "pool", options_);
  try {
    (void)pool.acquire("/fake/base.qcow2", dir_ / "target.qcow2");
    FAIL() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Daemon must be started"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "target.qcow2"));
}

TEST_F(OverlayPoolUnit, AcquireExistingTargetRaisesError) {
  OverlayPool pool(10, dir_ / "pool", options_);
  const fs::path target = dir_ / "existing.qcow2";
  std::ofstream(target) << "existing content";
  try {
    (void)pool.acquire("/fake/base.qcow2", target);
    FAIL() << "expected OverlayTargetExists";
  } catch (const OverlayTargetExists& e) {
    EXPECT_THAT(e.what(), HasSubstr("already exists"));
  }
  std::ifstream in(target);
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "existing content");
}

TEST_F(OverlayPoolUnit, NotStartedReportsNoDaemonAndNoQueues) {
  OverlayPool pool(10, dir_ / "pool", options_);
  EXPECT_FALSE(pool.started());
  EXPECT_FALSE(pool.daemon_enabled());
  EXPECT_TRUE(pool.stats().empty());
  pool.stop();  // stop without start is a no-op
  EXPECT_FALSE(fs::exists(dir_ / "pool"));
}

}  // namespace
}  // namespace vial
