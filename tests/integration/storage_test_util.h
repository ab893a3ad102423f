// Shared by the storage integration tests: a private temp dir (also $VIAL_HOME), real qcow2
// base images, qemu-img inspection, and the leak check "nothing still runs from this dir".
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/process.h"

namespace vial::testing {

namespace fs = std::filesystem;

inline nlohmann::json qemu_img_info(const fs::path& image) {
  auto r = run_capture({"qemu-img", "info", "--output=json", image.string()}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return nlohmann::json::parse(r.output, nullptr, false);
}

// `qemu-img info` in its human format, as the seeds read it.
inline std::string qemu_img_info_text(const fs::path& image) {
  return run_capture({"qemu-img", "info", "-U", image.string()}, std::chrono::seconds(30)).output;
}

inline CaptureResult qemu_img_check(const fs::path& image) {
  return run_capture({"qemu-img", "check", image.string()}, std::chrono::seconds(30));
}

inline void make_base(const fs::path& path, const std::string& size = "64M") {
  auto r = run_capture({"qemu-img", "create", "-q", "-f", "qcow2", path.string(), size}, std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

// Pids (other than ours) whose command line mentions `needle`.
inline std::vector<int> processes_mentioning(const std::string& needle) {
  std::vector<int> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (std::stoi(name) == ::getpid()) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::stringstream ss;
    ss << in.rdbuf();
    if (ss.str().find(needle) != std::string::npos) found.push_back(std::stoi(name));
  }
  return found;
}

// Unix sockets anywhere under `dir`.
inline std::vector<fs::path> sockets_under(const fs::path& dir) {
  std::vector<fs::path> found;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_socket(ec)) found.push_back(it->path());
  }
  return found;
}

// A fresh dir per test, used as $VIAL_HOME too, with one 64 MiB qcow2 base in it. TearDown
// checks that nothing the test started still runs or listens there.
class StorageDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!find_program("qemu-storage-daemon") || !find_program("qemu-img")) {
      GTEST_SKIP() << "qemu-storage-daemon / qemu-img not installed";
    }
    char tmpl[] = "/tmp/vial-storage-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::setenv("VIAL_HOME", (dir_ / "home").c_str(), 1);
    base_ = dir_ / "base.qcow2";
    make_base(base_);
  }

  void TearDown() override {
    if (dir_.empty()) return;
    EXPECT_TRUE(processes_mentioning(dir_.string()).empty()) << "a process outlived its owner";
    EXPECT_TRUE(sockets_under(dir_).empty()) << "a socket outlived its owner";
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }

  fs::path dir_;
  fs::path base_;
};

}  // namespace vial::testing
