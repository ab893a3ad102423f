// StorageDaemon and QmpClient against a real qemu-storage-daemon and real files
// (seed: storage-daemon-tests.txt, integration, error and stress cases).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <future>
#include <set>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "storage_test_util.h"
#include "qmp/qmp_client.h"
#include "storage/overlay_pool.h"
#include "storage/storage_daemon.h"

namespace vial {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::qemu_img_check;
using testing::qemu_img_info;
using testing::qemu_img_info_text;

class StorageDaemonIntegration : public testing::StorageDirTest {
 protected:
  void SetUp() override {
    StorageDirTest::SetUp();
    if (IsSkipped()) return;
    daemon_ = std::make_unique<StorageDaemon>(dir_ / "run");
  }
  void TearDown() override {
    daemon_.reset();
    StorageDirTest::TearDown();
  }
  StorageDaemon& started_daemon() {
    daemon_->start();
    return *daemon_;
  }
  // Creates `count` overlays named prefix-N from `count` threads at once.
  std::vector<fs::path> create_concurrently(const std::string& prefix, int count) {
    std::vector<fs::path> overlays;
    std::vector<std::future<void>> tasks;
    for (int i = 0; i < count; ++i) overlays.push_back(dir_ / (prefix + "-" + std::to_string(i) + ".qcow2"));
    for (const auto& o : overlays) {
      tasks.push_back(std::async(std::launch::async, [&, o] { daemon_->create_overlay(base_, o); }));
    }
    for (auto& t : tasks) t.get();
    return overlays;
  }
  std::unique_ptr<StorageDaemon> daemon_;
};

TEST_F(StorageDaemonIntegration, StartStopLifecycle) {
  daemon_->start();
  EXPECT_TRUE(daemon_->started());
  const pid_t pid = daemon_->pid();
  EXPECT_GT(pid, 0);
  daemon_->stop();
  EXPECT_FALSE(daemon_->started());
  EXPECT_NE(::kill(pid, 0), 0) << "the daemon process must be gone (killed and reaped)";
}

TEST_F(StorageDaemonIntegration, DoubleStartIsIdempotent) {
  daemon_->start();
  const pid_t first = daemon_->pid();
  daemon_->start();
  EXPECT_EQ(daemon_->pid(), first);
  EXPECT_TRUE(daemon_->started());
  EXPECT_EQ(testing::processes_mentioning(dir_.string()).size(), 1u);
}

TEST_F(StorageDaemonIntegration, DoubleStopIsIdempotent) {
  daemon_->start();
  daemon_->stop();
  EXPECT_FALSE(daemon_->started());
  daemon_->stop();
  EXPECT_FALSE(daemon_->started());
}

TEST_F(StorageDaemonIntegration, SocketCreatedOnStart) {
  daemon_->start();
  const fs::path socket = daemon_->socket_path();
  ASSERT_FALSE(socket.empty());
  EXPECT_TRUE(fs::is_socket(socket));
}

TEST_F(StorageDaemonIntegration, SocketRemovedOnStop) {
  daemon_->start();
  const fs::path socket = daemon_->socket_path();
  daemon_->stop();
  EXPECT_FALSE(fs::exists(socket));
  EXPECT_FALSE(fs::exists(socket.parent_path())) << "the private run dir is removed too";
}

TEST_F(StorageDaemonIntegration, CreateOverlay) {
  const fs::path overlay = dir_ / "test-overlay.qcow2";
  started_daemon().create_overlay(base_, overlay);
  ASSERT_TRUE(fs::exists(overlay));
  EXPECT_GT(fs::file_size(overlay), 0u);
  auto check = qemu_img_check(overlay);
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

TEST_F(StorageDaemonIntegration, OverlayHasCorrectBackingFile) {
  const fs::path overlay = dir_ / "backing-test.qcow2";
  started_daemon().create_overlay(base_, overlay);
  const std::string text = qemu_img_info_text(overlay);
  EXPECT_THAT(text, HasSubstr(base_.string()));
  EXPECT_THAT(text, HasSubstr("backing file:"));
  auto info = qemu_img_info(overlay);
  EXPECT_EQ(info.value("backing-filename", ""), base_.string());
  EXPECT_EQ(info.value("backing-filename-format", ""), "qcow2");
}

TEST_F(StorageDaemonIntegration, OverlayHasQcow2FormatAndBaseSize) {
  const fs::path overlay = dir_ / "format-test.qcow2";
  started_daemon().create_overlay(base_, overlay);
  auto info = qemu_img_info(overlay);
  EXPECT_EQ(info.value("format", ""), "qcow2");
  EXPECT_EQ(info.value("virtual-size", 0), 64 << 20);
}

TEST_F(StorageDaemonIntegration, MultipleOverlaysCreatedSequentially) {
  started_daemon();
  std::vector<fs::path> overlays;
  for (int i = 0; i < 4; ++i) {
    overlays.push_back(dir_ / ("overlay-" + std::to_string(i) + ".qcow2"));
    daemon_->create_overlay(base_, overlays.back());
  }
  for (const auto& o : overlays) {
    EXPECT_TRUE(fs::exists(o));
    EXPECT_GT(fs::file_size(o), 0u);
  }
}

TEST_F(StorageDaemonIntegration, MultipleOverlaysCreatedConcurrently) {
  started_daemon();
  for (const auto& o : create_concurrently("concurrent", 5)) EXPECT_TRUE(fs::exists(o)) << o;
}

TEST_F(StorageDaemonIntegration, RestartDaemonAfterStop) {
  daemon_->start();
  EXPECT_TRUE(daemon_->started());
  daemon_->stop();
  EXPECT_FALSE(daemon_->started());
  StorageDaemon second(dir_ / "run");
  second.start();
  EXPECT_TRUE(second.started());
  second.create_overlay(base_, dir_ / "after-restart.qcow2");
  second.stop();
  // The same instance restarts as well.
  daemon_->start();
  daemon_->create_overlay(base_, dir_ / "same-instance.qcow2");
  EXPECT_TRUE(fs::exists(dir_ / "same-instance.qcow2"));
}

// --- with OverlayPool (seed: TestOverlayPoolWithDaemon) ---

TEST_F(StorageDaemonIntegration, PoolUsesDaemonWhenEnabled) {
  OverlayPool pool(5, dir_ / "pool");
  pool.start({base_});
  EXPECT_TRUE(pool.daemon_enabled());
  const fs::path target = dir_ / "acquired.qcow2";
  EXPECT_TRUE(pool.acquire(base_, target));  // from the pool
  EXPECT_TRUE(fs::exists(target));
  pool.stop();
}

TEST_F(StorageDaemonIntegration, DaemonStoppedOnPoolShutdown) {
  OverlayPool pool(5, dir_ / "pool");
  pool.start({base_});
  EXPECT_TRUE(pool.daemon_enabled());
  EXPECT_EQ(testing::processes_mentioning(dir_.string()).size(), 1u);
  pool.stop();
  EXPECT_FALSE(pool.daemon_enabled());
  EXPECT_TRUE(testing::processes_mentioning(dir_.string()).empty());
}

// --- errors (seed: TestQemuStorageDaemonErrors) ---

TEST_F(StorageDaemonIntegration, NonexistentBaseImageFails) {
  const fs::path overlay = dir_ / "overlay.qcow2";
  try {
    started_daemon().create_overlay(dir_ / "does-not-exist.qcow2", overlay);
    FAIL() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr("Failed to get image info"));
  }
  EXPECT_FALSE(fs::exists(overlay));
}

TEST_F(StorageDaemonIntegration, InvalidBaseImageFails) {
  const fs::path fake = dir_ / "fake-base.qcow2";
  std::ofstream(fake) << "not a qcow2 file";
  const fs::path overlay = dir_ / "overlay.qcow2";
  try {
    started_daemon().create_overlay(fake, overlay);
    FAIL() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not qcow2 format"));
  }
  EXPECT_FALSE(fs::exists(overlay));
}

// Root ignores directory permissions, so as root the directory is made immutable instead.
TEST_F(StorageDaemonIntegration, UnwritableTargetFailsAndLeavesNothing) {
  const fs::path readonly = dir_ / "readonly";
  fs::create_directory(readonly);
  fs::permissions(readonly, fs::perms(0555));
  bool immutable = false;
  if (::geteuid() == 0) {
    immutable = run_capture({"chattr", "+i", readonly.string()}, std::chrono::seconds(10)).exit_code == 0;
    if (!immutable) GTEST_SKIP() << "running as root on a filesystem without chattr +i";
  }
  const fs::path overlay = readonly / "overlay.qcow2";
  try {
    started_daemon().create_overlay(base_, overlay);
    ADD_FAILURE() << "expected StorageDaemonError";
  } catch (const StorageDaemonError& e) {
    EXPECT_THAT(e.what(), HasSubstr(overlay.string()));
  }
  EXPECT_FALSE(fs::exists(overlay));
  if (immutable) (void)run_capture({"chattr", "-i", readonly.string()}, std::chrono::seconds(10));
  fs::permissions(readonly, fs::perms(0755));
  // The daemon is still usable after a failed job.
  daemon_->create_overlay(base_, dir_ / "after-failure.qcow2");
  EXPECT_TRUE(fs::exists(dir_ / "after-failure.qcow2"));
}

TEST_F(StorageDaemonIntegration, UnicodePath) {
  const fs::path unicode_dir = dir_ / "тест-日本語-🔥";
  fs::create_directory(unicode_dir);
  const fs::path overlay = unicode_dir / "overlay-émoji-中文.qcow2";
  started_daemon().create_overlay(base_, overlay);
  EXPECT_TRUE(fs::exists(overlay));
  EXPECT_EQ(qemu_img_check(overlay).exit_code, 0);
}

TEST_F(StorageDaemonIntegration, SpacesAndCommasInPath) {
  const fs::path space_dir = dir_ / "path with spaces, and commas";
  fs::create_directory(space_dir);
  const fs::path base = space_dir / "base image.qcow2";
  fs::copy_file(base_, base);
  const fs::path overlay = space_dir / "overlay file.qcow2";
  started_daemon().create_overlay(base, overlay);
  EXPECT_TRUE(fs::exists(overlay));
  EXPECT_EQ(qemu_img_info(overlay).value("backing-filename", ""), base.string());
}

TEST_F(StorageDaemonIntegration, SymlinkBaseImage) {
  const fs::path link = dir_ / "base-link.qcow2";
  fs::create_symlink(base_, link);
  const fs::path overlay = dir_ / "overlay.qcow2";
  started_daemon().create_overlay(link, overlay);
  ASSERT_TRUE(fs::exists(overlay));
  EXPECT_GT(fs::file_size(overlay), 0u);
  EXPECT_EQ(qemu_img_check(overlay).exit_code, 0);
}

// --- stress (seed: TestQemuStorageDaemonStress) ---

TEST_F(StorageDaemonIntegration, ManyOverlaysSequential) {
  started_daemon();
  std::set<ino_t> inodes;
  for (int i = 0; i < 25; ++i) {
    const fs::path o = dir_ / ("overlay-" + std::to_string(i) + ".qcow2");
    daemon_->create_overlay(base_, o);
    struct stat st {};
    ASSERT_EQ(::stat(o.c_str(), &st), 0);
    inodes.insert(st.st_ino);
  }
  EXPECT_EQ(inodes.size(), 25u);  // all unique files
}

TEST_F(StorageDaemonIntegration, ManyOverlaysConcurrent) {
  started_daemon();
  for (const auto& o : create_concurrently("concurrent", 20)) {
    EXPECT_TRUE(fs::exists(o)) << o;
    EXPECT_EQ(qemu_img_check(o).exit_code, 0) << o;
  }
}

TEST_F(StorageDaemonIntegration, RapidStartStopCyclesLeakNothing) {
  const size_t fds_before = std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator());
  for (int i = 0; i < 5; ++i) {
    StorageDaemon daemon(dir_ / "run");
    daemon.start();
    EXPECT_TRUE(daemon.started());
    const fs::path socket = daemon.socket_path();
    daemon.stop();
    EXPECT_FALSE(daemon.started());
    EXPECT_FALSE(fs::exists(socket));
  }
  const size_t fds_after = std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator());
  EXPECT_EQ(fds_after, fds_before);
  EXPECT_TRUE(fs::is_empty(dir_ / "run"));
}

TEST_F(StorageDaemonIntegration, DestructorStopsTheDaemon) {
  pid_t pid;
  {
    StorageDaemon daemon(dir_ / "run");
    daemon.start();
    pid = daemon.pid();
  }
  EXPECT_NE(::kill(pid, 0), 0);
  EXPECT_TRUE(fs::is_empty(dir_ / "run"));
}

// --- QmpClient on its own ---

// A daemon of the test's own: QEMU's monitor serves one client at a time.
TEST_F(StorageDaemonIntegration, QmpClientCommandsEventsAndErrors) {
  const fs::path socket = dir_ / "qmp-test.sock";
  Child daemon = Child::spawn({"qemu-storage-daemon", "--chardev",
                               "socket,id=m,path=" + socket.string() + ",server=on,wait=off", "--monitor",
                               "chardev=m"});
  // JSON literals stay out of the coroutine (GCC 12 rejects them there).
  const std::string file = (dir_ / "evented.img").string();
  const nlohmann::json bad_node = {{"node-name", "no-such-node"}};
  const nlohmann::json create = {{"job-id", "j1"}, {"options", {{"driver", "file"}, {"filename", file}, {"size", 0}}}};
  const nlohmann::json dismiss = {{"id", "j1"}};
  asio::io_context io;
  auto done = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::shared_ptr<QmpClient> qmp;
        for (int i = 0; i < 5000 && !qmp; ++i) {
          try {
            qmp = co_await QmpClient::connect(socket);
          } catch (const boost::system::system_error&) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        }
        EXPECT_TRUE(qmp->greeting().contains("QMP"));
        auto version = co_await qmp->execute("query-version");
        EXPECT_EQ(version["qemu"].value("major", 0), 7);
        try {
          co_await qmp->execute("blockdev-del", bad_node);
          ADD_FAILURE() << "expected QmpError";
        } catch (const QmpError& e) {
          EXPECT_EQ(e.error_class(), "GenericError");
          EXPECT_THAT(e.what(), HasSubstr("no-such-node"));
        }
        try {
          co_await qmp->execute("no-such-command");
          ADD_FAILURE() << "expected QmpError";
        } catch (const QmpError& e) {
          EXPECT_EQ(e.error_class(), "CommandNotFound");
        }
        // Events reach the waiter registered before the command that causes them.
        auto concluded = qmp->watch_event("JOB_STATUS_CHANGE", [](const nlohmann::json& d) {
          return d["id"] == "j1" && d["status"] == "concluded";
        });
        co_await qmp->execute("blockdev-create", create);
        auto data = co_await concluded->wait(std::chrono::seconds(30));
        EXPECT_EQ(data.value("status", std::string()), "concluded");
        co_await qmp->execute("job-dismiss", dismiss);
        EXPECT_TRUE(fs::exists(file));
        qmp->close();
        try {
          co_await qmp->execute("query-version");
          ADD_FAILURE() << "expected an error after close()";
        } catch (const QmpError&) {
          ADD_FAILURE() << "expected a connection error, not a QMP error";
        } catch (const Error& e) {
          EXPECT_THAT(e.what(), HasSubstr("connection lost"));
        }
      },
      asio::use_future);
  io.run();
  done.get();
  daemon.kill_and_reap();
  fs::remove(socket);  // a killed daemon can't remove its own socket
}

}  // namespace
}  // namespace vial
