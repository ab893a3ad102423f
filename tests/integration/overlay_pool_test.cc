// OverlayPool and the pristine-copy fast path with a real daemon and real files
// (seed: overlay-pool-tests.txt; the VM-booting cases belong to the VmManager tests).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <future>
#include <thread>

#include "storage/overlay_pool.h"
#include "storage/pristine_overlays.h"
#include "storage_test_util.h"

namespace vial {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::qemu_img_check;
using testing::qemu_img_info;

class OverlayPoolIntegration : public testing::StorageDirTest {
 protected:
  fs::path pool_dir() const { return dir_ / "pool"; }
  std::string key() const { return base_.string(); }  // base_ is already absolute and resolved

  // A fresh overlay of `base` that qemu-img finds clean, of the base's size, backed by it.
  void expect_valid_overlay(const fs::path& overlay, const fs::path& base) {
    ASSERT_TRUE(fs::exists(overlay)) << overlay;
    auto check = qemu_img_check(overlay);
    EXPECT_EQ(check.exit_code, 0) << check.output;
    auto info = qemu_img_info(overlay);
    EXPECT_EQ(info.value("format", ""), "qcow2");
    EXPECT_EQ(info.value("backing-filename", ""), base.string());
    EXPECT_EQ(info.value("backing-filename-format", ""), "qcow2");
    EXPECT_EQ(info.value("virtual-size", 0), qemu_img_info(base).value("virtual-size", -1));
  }

  size_t files_in(const fs::path& dir) {
    std::error_code ec;
    return std::distance(fs::directory_iterator(dir, ec), fs::directory_iterator());
  }
};

// --- lifecycle (seed: TestOverlayPoolPureLogic, the cases that start the daemon) ---

TEST_F(OverlayPoolIntegration, StartWithZeroPoolSizeStartsDaemonOnly) {
  OverlayPool pool(1, pool_dir());
  pool.start({"/fake/base.qcow2"});
  EXPECT_TRUE(pool.started());
  EXPECT_TRUE(pool.daemon_enabled());
  EXPECT_FALSE(fs::exists(pool_dir()));
  EXPECT_FALSE(pool.refilling());
  EXPECT_TRUE(pool.stats().empty());
  pool.stop();
}

TEST_F(OverlayPoolIntegration, StartWithNegativePoolSizeStartsDaemonOnly) {
  OverlayPool pool(-10, pool_dir());
  pool.start({"/fake/base.qcow2"});
  EXPECT_TRUE(pool.started());
  EXPECT_TRUE(pool.daemon_enabled());
  EXPECT_FALSE(fs::exists(pool_dir()));
  pool.stop();
}

TEST_F(OverlayPoolIntegration, EmptyBaseImagesList) {
  OverlayPool pool(10, pool_dir());
  pool.start({});
  EXPECT_TRUE(pool.stats().empty());
  EXPECT_TRUE(pool.started());
  EXPECT_TRUE(fs::is_directory(pool_dir()));
  pool.stop();
}

TEST_F(OverlayPoolIntegration, DoubleStopIsSafe) {
  OverlayPool pool(10, pool_dir());
  pool.start({});
  pool.stop();
  pool.stop();
  EXPECT_FALSE(pool.started());
}

TEST_F(OverlayPoolIntegration, DoubleStartRaisesError) {
  OverlayPool pool(10, pool_dir());
  pool.start({});
  try {
    pool.start({});
    ADD_FAILURE() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr("already started"));
  }
  pool.stop();
}

TEST_F(OverlayPoolIntegration, StartRestartAfterStop) {
  OverlayPool pool(10, pool_dir());
  pool.start({});
  EXPECT_TRUE(pool.started());
  pool.stop();
  EXPECT_FALSE(pool.started());
  pool.start({base_});
  EXPECT_TRUE(pool.started());
  EXPECT_EQ(pool.stats().at(key()), 5u);
  pool.stop();
}

// The seed patches makedirs to fail; here pool_dir really can't be made (its parent is a file),
// which takes the same path and also works as root.
TEST_F(OverlayPoolIntegration, UncreatablePoolDirDisablesPrecreation) {
  std::ofstream(dir_ / "a-file") << "x";
  OverlayPool pool(20, dir_ / "a-file" / "pool");
  pool.start({base_});
  EXPECT_TRUE(pool.started());
  EXPECT_TRUE(pool.daemon_enabled());
  EXPECT_TRUE(pool.stats().empty());
  EXPECT_FALSE(pool.refilling());
  EXPECT_FALSE(pool.acquire(base_, dir_ / "on-demand.qcow2"));  // still served on demand
  expect_valid_overlay(dir_ / "on-demand.qcow2", base_);
  pool.stop();
}

// --- error handling (seed: TestOverlayPoolErrorHandling, with real failures instead of mocks) ---

// The pool lives on tmpfs, the target on the test's disk: rename gives EXDEV.
TEST_F(OverlayPoolIntegration, RenameFailureFallsBackToOnDemand) {
  char tmpl[] = "/dev/shm/vial-pool-test-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) GTEST_SKIP() << "no /dev/shm";
  const fs::path shm = tmpl;
  struct stat a {}, b {};
  ::stat(shm.c_str(), &a);
  ::stat(dir_.c_str(), &b);
  if (a.st_dev == b.st_dev) {
    fs::remove_all(shm);
    GTEST_SKIP() << "/dev/shm and the test dir are on the same filesystem";
  }
  {
    OverlayPool pool(2, shm / "pool");
    pool.start({base_});
    ASSERT_EQ(pool.stats().at(key()), 1u);
    const fs::path pooled = fs::directory_iterator(shm / "pool")->path();
    const fs::path target = dir_ / "target.qcow2";
    EXPECT_FALSE(pool.acquire(base_, target));  // made on demand
    EXPECT_FALSE(fs::exists(pooled)) << "the orphaned pooled overlay is removed";
    expect_valid_overlay(target, base_);
    pool.stop();
  }
  EXPECT_TRUE(fs::is_empty(shm));
  fs::remove_all(shm);
}

// The seed patches rmtree to fail; here a file in pool_dir is made immutable (root can't
// remove it either).
TEST_F(OverlayPoolIntegration, StopCompletesWhenPoolDirRemovalFails) {
  OverlayPool pool(10, pool_dir());
  pool.start({});
  const fs::path stuck = pool_dir() / "stuck";
  std::ofstream(stuck) << "x";
  if (run_capture({"chattr", "+i", stuck.string()}, std::chrono::seconds(10)).exit_code != 0) {
    pool.stop();
    GTEST_SKIP() << "chattr +i not supported here";
  }
  pool.stop();  // must not throw
  EXPECT_FALSE(pool.started());
  EXPECT_FALSE(pool.daemon_enabled());
  EXPECT_TRUE(fs::exists(stuck));
  (void)run_capture({"chattr", "-i", stuck.string()}, std::chrono::seconds(10));
}

// --- with real overlays (seed: TestOverlayPoolIntegration) ---

TEST_F(OverlayPoolIntegration, FullLifecycle) {
  OverlayPool pool(4, pool_dir());
  pool.start({base_});
  EXPECT_EQ(pool.stats().at(key()), 2u);
  const fs::path target = dir_ / "acquired.qcow2";
  EXPECT_TRUE(pool.acquire(base_, target));
  EXPECT_TRUE(fs::exists(target));
  EXPECT_EQ(pool.stats().at(key()), 1u);  // one less in the pool
  pool.stop();
  EXPECT_FALSE(fs::exists(pool_dir()));
  expect_valid_overlay(target, base_);  // an acquired overlay belongs to the caller
}

TEST_F(OverlayPoolIntegration, AcquireWithZeroPoolSizeCreatesOnDemand) {
  OverlayPool pool(1, pool_dir());  // CLI single-VM mode: pool_size 0
  pool.start({base_});
  EXPECT_TRUE(pool.daemon_enabled());
  EXPECT_TRUE(pool.stats().empty());
  const fs::path target = dir_ / "acquired.qcow2";
  EXPECT_FALSE(pool.acquire(base_, target));
  expect_valid_overlay(target, base_);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, AcquiredOverlayHasCorrectBackingFile) {
  OverlayPool pool(4, pool_dir());
  pool.start({base_});
  const fs::path target = dir_ / "acquired.qcow2";
  EXPECT_TRUE(pool.acquire(base_, target));
  EXPECT_THAT(testing::qemu_img_info_text(target), HasSubstr(base_.string()));
  expect_valid_overlay(target, base_);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, PoolExhaustionCreatesOnDemand) {
  OverlayPool pool(4, pool_dir());  // pool_size 2
  pool.start({base_});
  EXPECT_TRUE(pool.acquire(base_, dir_ / "t1.qcow2"));
  EXPECT_TRUE(pool.acquire(base_, dir_ / "t2.qcow2"));
  EXPECT_FALSE(pool.acquire(base_, dir_ / "t3.qcow2"));  // made on demand
  for (const char* t : {"t1.qcow2", "t2.qcow2", "t3.qcow2"}) expect_valid_overlay(dir_ / t, base_);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, ConcurrentAcquiresAllSucceed) {
  OverlayPool pool(10, pool_dir());  // pool_size 5
  pool.start({base_});
  std::vector<std::future<bool>> results;
  for (int i = 0; i < 10; ++i) {
    results.push_back(std::async(std::launch::async, [&, i] {
      return pool.acquire(base_, dir_ / ("target-" + std::to_string(i) + ".qcow2"));
    }));
  }
  int from_pool = 0;
  for (auto& r : results) from_pool += r.get() ? 1 : 0;
  EXPECT_EQ(from_pool, 5);  // 5 from the pool, 5 on demand
  for (int i = 0; i < 10; ++i) expect_valid_overlay(dir_ / ("target-" + std::to_string(i) + ".qcow2"), base_);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, MultipleBaseImages) {
  const fs::path js_base = dir_ / "javascript.qcow2";
  testing::make_base(js_base, "32M");
  OverlayPool pool(4, pool_dir());
  pool.start({base_, js_base});
  EXPECT_EQ(pool.stats().at(key()), 2u);
  EXPECT_EQ(pool.stats().at(js_base.string()), 2u);
  EXPECT_TRUE(pool.acquire(base_, dir_ / "py.qcow2"));
  EXPECT_TRUE(pool.acquire(js_base, dir_ / "js.qcow2"));
  expect_valid_overlay(dir_ / "py.qcow2", base_);
  expect_valid_overlay(dir_ / "js.qcow2", js_base);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, GetStats) {
  OverlayPool pool(6, pool_dir());
  pool.start({base_});
  EXPECT_EQ(pool.stats().at(key()), 3u);
  EXPECT_TRUE(pool.acquire(base_, dir_ / "t.qcow2"));
  EXPECT_EQ(pool.stats().at(key()), 2u);
  pool.stop();
}

// --- beyond the seeds ---

TEST_F(OverlayPoolIntegration, RefillsInTheBackground) {
  OverlayPoolOptions options;
  options.refill_delay = std::chrono::milliseconds(10);
  OverlayPool pool(4, pool_dir(), options);
  pool.start({base_});
  EXPECT_TRUE(pool.refilling());
  EXPECT_TRUE(pool.acquire(base_, dir_ / "a.qcow2"));
  EXPECT_TRUE(pool.acquire(base_, dir_ / "b.qcow2"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pool.stats().at(key()) < 2u && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(pool.stats().at(key()), 2u);
  EXPECT_TRUE(pool.acquire(base_, dir_ / "c.qcow2"));
  expect_valid_overlay(dir_ / "c.qcow2", base_);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, SymlinkedBaseSharesTheQueueOfItsTarget) {
  const fs::path link = dir_ / "base-link.qcow2";
  fs::create_symlink(base_, link);
  OverlayPool pool(4, pool_dir());
  pool.start({link});
  EXPECT_EQ(pool.stats().at(key()), 2u);  // keyed by the resolved path
  EXPECT_TRUE(pool.acquire(base_, dir_ / "t.qcow2"));
  expect_valid_overlay(dir_ / "t.qcow2", base_);
  pool.stop();
}

TEST_F(OverlayPoolIntegration, DestructorLeavesNothingBehind) {
  {
    OverlayPool pool(4, pool_dir());
    pool.start({base_});
    EXPECT_TRUE(pool.acquire(base_, dir_ / "kept.qcow2"));
  }
  EXPECT_FALSE(fs::exists(pool_dir()));
  EXPECT_TRUE(fs::is_empty(dir_ / "home" / "run"));
  EXPECT_TRUE(fs::exists(dir_ / "kept.qcow2"));
}

// --- the fast path on its own ---

TEST_F(OverlayPoolIntegration, PristineCopyIsCleanAndBackedByTheBase) {
  StorageDaemon daemon(dir_ / "run");
  daemon.start();
  PristineOverlays pristine(dir_ / "pristine",
                            [&](const fs::path& b, const fs::path& t) { daemon.create_overlay(b, t); });
  for (int i = 0; i < 3; ++i) pristine.create(base_, dir_ / ("copy-" + std::to_string(i) + ".qcow2"));
  EXPECT_EQ(files_in(dir_ / "pristine"), 1u);  // made once
  for (int i = 0; i < 3; ++i) expect_valid_overlay(dir_ / ("copy-" + std::to_string(i) + ".qcow2"), base_);
  // A copy is the same bytes as what the daemon makes directly.
  daemon.create_overlay(base_, dir_ / "direct.qcow2");
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  EXPECT_EQ(bytes(dir_ / "copy-0.qcow2"), bytes(dir_ / "direct.qcow2"));
}

TEST_F(OverlayPoolIntegration, PristineInvalidatedWhenTheBaseChanges) {
  StorageDaemon daemon(dir_ / "run");
  daemon.start();
  int made = 0;
  PristineOverlays pristine(dir_ / "pristine", [&](const fs::path& b, const fs::path& t) {
    ++made;
    daemon.create_overlay(b, t);
  });
  pristine.create(base_, dir_ / "before.qcow2");
  fs::remove(base_);
  testing::make_base(base_, "128M");  // rebuilt: new inode, size and virtual size
  pristine.create(base_, dir_ / "after.qcow2");
  EXPECT_EQ(made, 2);
  EXPECT_EQ(files_in(dir_ / "pristine"), 1u) << "the stale pristine is removed";
  EXPECT_EQ(qemu_img_info(dir_ / "after.qcow2").value("virtual-size", 0), 128 << 20);
  expect_valid_overlay(dir_ / "after.qcow2", base_);
}

TEST_F(OverlayPoolIntegration, PristineErrorsNameTheBase) {
  PristineOverlays pristine(dir_ / "pristine", [](const fs::path&, const fs::path&) {});
  try {
    pristine.create(dir_ / "missing.qcow2", dir_ / "t.qcow2");
    ADD_FAILURE() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Failed to get image info"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "t.qcow2"));
}

// What `vial run` uses: pristines under $VIAL_HOME/overlays/pristine, a short-lived daemon.
TEST_F(OverlayPoolIntegration, CreateOverlayFastForTheOneShotCli) {
  create_overlay_fast(base_, dir_ / "one.qcow2");
  create_overlay_fast(base_, dir_ / "two.qcow2");
  expect_valid_overlay(dir_ / "one.qcow2", base_);
  expect_valid_overlay(dir_ / "two.qcow2", base_);
  EXPECT_EQ(files_in(dir_ / "home" / "overlays" / "pristine"), 1u);
  EXPECT_TRUE(fs::is_empty(dir_ / "home" / "run")) << "the daemon is gone once the pristine exists";
}

// Several vial processes share the pristine cache: each builds under a temporary name and
// renames, so all of them succeed and exactly one pristine remains.
TEST_F(OverlayPoolIntegration, ConcurrentProcessesShareThePristineCache) {
  std::vector<pid_t> children;
  for (int i = 0; i < 3; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 0;
      try {
        PristineOverlays cache(dir_ / "shared", [&](const fs::path& b, const fs::path& t) {
          StorageDaemon daemon(dir_ / "run");
          daemon.start();
          daemon.create_overlay(b, t);
        });
        cache.create(base_, dir_ / ("proc-" + std::to_string(i) + ".qcow2"));
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(files_in(dir_ / "shared"), 1u);
  for (int i = 0; i < 3; ++i) expect_valid_overlay(dir_ / ("proc-" + std::to_string(i) + ".qcow2"), base_);
}

}  // namespace
}  // namespace vial
