// The qcow2 header reader and the file copy the fast path is built on (no processes).
#include <endian.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "storage/pristine_overlays.h"
#include "storage/qcow2.h"
#include "storage/storage_error.h"

namespace vial {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class StorageQcow2 : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vial-qcow2-unit-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A minimal qcow2 header: magic, version 3, virtual size at offset 24.
  fs::path write_header(const std::string& name, uint64_t size) {
    std::string header(104, '\0');
    std::memcpy(header.data(), "QFI\xfb", 4);
    header[7] = 3;
    uint64_t be = htobe64(size);
    std::memcpy(header.data() + 24, &be, sizeof be);
    std::ofstream(dir_ / name, std::ios::binary) << header;
    return dir_ / name;
  }

  std::string error_of(const fs::path& p) {
    try {
      (void)inspect_base_image(p);
    } catch (const StorageDaemonError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(StorageQcow2, ReadsVirtualSizeAndIdentity) {
  const fs::path p = write_header("a.qcow2", 5ULL << 30);
  BaseImage info = inspect_base_image(p);
  EXPECT_EQ(info.virtual_size, 5ULL << 30);
  EXPECT_EQ(info.path, p);
  EXPECT_NE(info.ino, 0u);
  EXPECT_EQ(info.file_size, 104);
}

TEST_F(StorageQcow2, KeepsSymlinkNameButReadsTarget) {
  const fs::path p = write_header("a.qcow2", 1 << 20);
  fs::create_symlink(p, dir_ / "link.qcow2");
  BaseImage info = inspect_base_image(dir_ / "link.qcow2");
  EXPECT_EQ(info.path, dir_ / "link.qcow2");
  EXPECT_EQ(info.virtual_size, 1u << 20);
  EXPECT_EQ(info.ino, inspect_base_image(p).ino);
}

TEST_F(StorageQcow2, MissingFileFailsWithImageInfo) {
  EXPECT_THAT(error_of(dir_ / "missing.qcow2"), HasSubstr("Failed to get image info"));
}

TEST_F(StorageQcow2, RawOrShortFileIsNotQcow2) {
  std::ofstream(dir_ / "raw.qcow2") << "not a qcow2 file";
  EXPECT_THAT(error_of(dir_ / "raw.qcow2"), HasSubstr("not qcow2 format"));
  std::ofstream(dir_ / "empty.qcow2");
  EXPECT_THAT(error_of(dir_ / "empty.qcow2"), HasSubstr("not qcow2 format"));
}

TEST_F(StorageQcow2, CopyToNewFileCopiesAndNeverOverwrites) {
  std::string data(300 * 1024, 'x');
  data[12345] = 'y';
  std::ofstream(dir_ / "src", std::ios::binary) << data;
  copy_to_new_file(dir_ / "src", dir_ / "dst");
  std::ifstream in(dir_ / "dst", std::ios::binary);
  std::string copy((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(copy, data);
  EXPECT_THROW(copy_to_new_file(dir_ / "src", dir_ / "dst"), StorageDaemonError);
  EXPECT_THROW(copy_to_new_file(dir_ / "missing", dir_ / "dst2"), StorageDaemonError);
  EXPECT_FALSE(fs::exists(dir_ / "dst2"));
}

TEST_F(StorageQcow2, CopyAcrossFilesystems) {
  if (fs::status(fs::path("/dev/shm")).type() != fs::file_type::directory) GTEST_SKIP() << "no /dev/shm";
  std::ofstream(dir_ / "src", std::ios::binary) << std::string(70000, 'z');
  char tmpl[] = "/dev/shm/vial-qcow2-unit-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const fs::path other = tmpl;
  copy_to_new_file(dir_ / "src", other / "dst");
  EXPECT_EQ(fs::file_size(other / "dst"), 70000u);
  fs::remove_all(other);
}

}  // namespace
}  // namespace vial
