// read_user_file: what vial reads because a user named it is a regular file under a limit.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "util/error.h"
#include "util/user_file.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

class UserFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vial-user-file-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  ErrorKind kind_of(const fs::path& p, uint64_t limit) {
    try {
      read_user_file(p, limit, "the file");
    } catch (const Error& e) {
      return e.kind();
    }
    return ErrorKind::internal;  // "no error": never expected by the callers below
  }
  fs::path dir_;
};

TEST_F(UserFileTest, ReadsARegularFileUpToItsLimit) {
  std::ofstream(dir_ / "f", std::ios::binary) << std::string(100, 'x');
  EXPECT_EQ(read_user_file(dir_ / "f", 100, "the file"), std::string(100, 'x'));
  EXPECT_EQ(kind_of(dir_ / "f", 99), ErrorKind::too_large);
}

TEST_F(UserFileTest, RefusesDevicesFifosDirectoriesAndMissingFiles) {
  EXPECT_EQ(kind_of("/dev/zero", 1 << 20), ErrorKind::invalid_input);
  ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  EXPECT_EQ(kind_of(dir_ / "fifo", 1 << 20), ErrorKind::invalid_input);  // and returns at once
  EXPECT_EQ(kind_of(dir_, 1 << 20), ErrorKind::invalid_input);
  EXPECT_EQ(kind_of(dir_ / "missing", 1 << 20), ErrorKind::invalid_input);
  try {
    read_user_file("/dev/zero", 10, "the code file");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the code file /dev/zero is not a regular file"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vial
