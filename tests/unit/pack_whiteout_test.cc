#include "pack/whiteout.h"

#include <gtest/gtest.h>

#include <fstream>

namespace vial::pack {
namespace {

namespace fs = std::filesystem;

TEST(PackWhiteout, NormalizeEntryPath) {
  EXPECT_EQ(normalize_entry_path("./etc//passwd"), "etc/passwd");
  EXPECT_EQ(normalize_entry_path("/usr/bin/"), "usr/bin");
  EXPECT_EQ(normalize_entry_path("./"), "");
  EXPECT_EQ(normalize_entry_path("a/./b"), "a/b");
  EXPECT_EQ(normalize_entry_path("a/../../etc"), std::nullopt);
  EXPECT_EQ(normalize_entry_path(".."), std::nullopt);
  EXPECT_EQ(normalize_entry_path("a/..b"), "a/..b");  // a name, not a parent reference
}

TEST(PackWhiteout, Classify) {
  EXPECT_EQ(classify_whiteout("etc/passwd").kind, WhiteoutKind::none);
  Whiteout w = classify_whiteout("etc/.wh.passwd");
  EXPECT_EQ(w.kind, WhiteoutKind::remove);
  EXPECT_EQ(w.target, "etc/passwd");
  w = classify_whiteout(".wh.top");
  EXPECT_EQ(w.kind, WhiteoutKind::remove);
  EXPECT_EQ(w.target, "top");
  w = classify_whiteout("var/cache/.wh..wh..opq");
  EXPECT_EQ(w.kind, WhiteoutKind::opaque);
  EXPECT_EQ(w.target, "var/cache");
  EXPECT_EQ(classify_whiteout(".wh..wh..opq").target, "");
  EXPECT_EQ(classify_whiteout("etc/.whatever").kind, WhiteoutKind::none);
}

class PackWhiteoutTree : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vial-wh-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    root_ = base_ / "root";
    outside_ = base_ / "outside";
    fs::create_directories(root_ / "d" / "sub");
    fs::create_directories(outside_);
    std::ofstream(root_ / "d" / "a") << "a";
    std::ofstream(root_ / "d" / "sub" / "b") << "b";
    std::ofstream(root_ / "keep") << "k";
    std::ofstream(outside_ / "precious") << "p";
    fs::create_directory_symlink(outside_, root_ / "link");
    root_ = fs::canonical(root_);
  }
  void TearDown() override { fs::remove_all(base_); }
  fs::path base_, root_, outside_;
};

TEST_F(PackWhiteoutTree, RemoveDeletesFilesAndTrees) {
  apply_whiteout(root_, {WhiteoutKind::remove, "d/a"});
  EXPECT_FALSE(fs::exists(root_ / "d" / "a"));
  apply_whiteout(root_, {WhiteoutKind::remove, "d/sub"});
  EXPECT_FALSE(fs::exists(root_ / "d" / "sub"));
  apply_whiteout(root_, {WhiteoutKind::remove, "no/such/thing"});  // nothing to do
  EXPECT_TRUE(fs::exists(root_ / "keep"));
}

TEST_F(PackWhiteoutTree, OpaqueEmptiesTheDirectoryOnly) {
  apply_whiteout(root_, {WhiteoutKind::opaque, "d"});
  EXPECT_TRUE(fs::is_directory(root_ / "d"));
  EXPECT_TRUE(fs::is_empty(root_ / "d"));
  EXPECT_TRUE(fs::exists(root_ / "keep"));
}

TEST_F(PackWhiteoutTree, NeverActsThroughSymlinks) {
  apply_whiteout(root_, {WhiteoutKind::remove, "link/precious"});
  apply_whiteout(root_, {WhiteoutKind::opaque, "link"});
  EXPECT_TRUE(fs::exists(outside_ / "precious"));
  EXPECT_EQ(path_inside(root_, "link/precious"), std::nullopt);
  // The symlink itself may be whited out: it goes, its target stays.
  apply_whiteout(root_, {WhiteoutKind::remove, "link"});
  EXPECT_FALSE(fs::exists(fs::symlink_status(root_ / "link")));
  EXPECT_TRUE(fs::exists(outside_ / "precious"));
}

}  // namespace
}  // namespace vial::pack
