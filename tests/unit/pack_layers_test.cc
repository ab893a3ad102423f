// Layer application and `docker save` archives on real tar files built in the test.
#include <sys/stat.h>

#include <fstream>
#include <iterator>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "pack/docker_archive.h"
#include "pack/layers.h"
#include "pack/source.h"
#include "pack_tar_builder.h"
#include "util/error.h"

namespace vial::pack {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using test::TarBuilder;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class PackLayers : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vial-layers-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = fs::canonical(tmpl);
    root_ = base_ / "root";
    fs::create_directory(root_);
  }
  void TearDown() override { fs::remove_all(base_); }

  // Bottom layer: files the top layer deletes, keeps and replaces.
  fs::path lower_layer() {
    fs::path p = base_ / "lower.tar";
    TarBuilder(p)
        .dir("etc")
        .file("etc/keep", "keep")
        .file("etc/gone", "gone")
        .dir("cache")
        .file("cache/old1", "1")
        .dir("cache/olddir")
        .file("cache/olddir/x", "x")
        .file("replaced", "v1")
        .dir("becomes-file")
        .file("becomes-file/inner", "i")
        .file("home/user/owned", "u", 0600, 1000);
    return p;
  }
  // Top layer: a whiteout, an opaque dir with a new file of its own, replacements, a hard link.
  fs::path upper_layer() {
    fs::path p = base_ / "upper.tar";
    TarBuilder(p)
        .file("etc/.wh.gone", "")
        .file("cache/new", "new")  // before the opaque marker: must survive it
        .file("cache/.wh..wh..opq", "")
        .file("replaced", "v2")
        .file("becomes-file", "now a file")
        .hardlink("etc/keep-link", "etc/keep");
    return p;
  }
  fs::path base_, root_;
};

TEST_F(PackLayers, WhiteoutsAndOpaqueDirsApplyToLowerLayersOnly) {
  apply_layer(lower_layer(), root_, "lower");
  apply_layer(upper_layer(), root_, "upper");
  EXPECT_EQ(slurp(root_ / "etc/keep"), "keep");
  EXPECT_FALSE(fs::exists(root_ / "etc/gone"));
  EXPECT_FALSE(fs::exists(root_ / "etc/.wh.gone"));
  EXPECT_EQ(slurp(root_ / "cache/new"), "new");
  EXPECT_FALSE(fs::exists(root_ / "cache/old1"));
  EXPECT_FALSE(fs::exists(root_ / "cache/olddir"));
  EXPECT_FALSE(fs::exists(root_ / "cache/.wh..wh..opq"));
  EXPECT_EQ(slurp(root_ / "replaced"), "v2");
  EXPECT_EQ(slurp(root_ / "becomes-file"), "now a file");
  EXPECT_EQ(fs::hard_link_count(root_ / "etc/keep"), 2u);
  struct stat st{};
  ASSERT_EQ(::stat((root_ / "home/user/owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 1000u);
  }
}

TEST_F(PackLayers, PlainTarballKeepsWhiteoutNamesAsFiles) {
  extract_tar(lower_layer(), root_, "lower.tar");
  extract_tar(upper_layer(), root_, "upper.tar");
  EXPECT_EQ(slurp(root_ / "etc/gone"), "gone");
  EXPECT_TRUE(fs::exists(root_ / "etc/.wh.gone"));
}

TEST_F(PackLayers, EntriesCannotEscapeTheRoot) {
  fs::create_directory(base_ / "outside");
  fs::path dotdot = base_ / "dotdot.tar";
  TarBuilder(dotdot).file("../outside/evil", "x");
  EXPECT_THROW(extract_tar(dotdot, root_, "dotdot.tar"), Error);
  EXPECT_FALSE(fs::exists(base_ / "outside/evil"));

  fs::path via_link = base_ / "symlink.tar";
  TarBuilder(via_link).symlink("out", base_ / "outside").file("out/evil", "x");
  try {
    extract_tar(via_link, root_, "symlink.tar");  // libarchive may refuse, or replace the link by a folder
  } catch (const Error&) {
  }
  EXPECT_FALSE(fs::exists(base_ / "outside/evil"));

  std::ofstream(base_ / "outside/secret") << "s";
  fs::path hard = base_ / "hardlink.tar";
  TarBuilder(hard).symlink("o", base_ / "outside").hardlink("stolen", "o/secret");
  fs::remove_all(root_);
  fs::create_directory(root_);
  EXPECT_THROW(extract_tar(hard, root_, "hardlink.tar"), Error);
  EXPECT_EQ(fs::hard_link_count(base_ / "outside/secret"), 1u);
}

// A `docker save` archive as docker writes it (legacy layout plus OCI index), two layers.
fs::path docker_archive(const fs::path& dir, const fs::path& lower, const fs::path& upper,
                        const std::string& arch = "amd64") {
  nlohmann::json config = {{"architecture", arch},
                           {"config",
                            {{"Entrypoint", {"/bin/app"}},
                             {"Cmd", {"--serve"}},
                             {"Env", {"PATH=/usr/bin:/bin", "MODE=prod"}},
                             {"WorkingDir", "/srv"}}}};
  nlohmann::json manifest = nlohmann::json::array(
      {{{"Config", "cf0123.json"}, {"RepoTags", {"app:1"}}, {"Layers", {"aa11/layer.tar", "bb22/layer.tar"}}}});
  fs::path p = dir / "docker-save.tar";
  TarBuilder(p)
      .dir("aa11")
      .file_from("aa11/layer.tar", lower)
      .dir("bb22")
      .file_from("bb22/layer.tar", upper)
      .file("cf0123.json", config.dump())
      .file("repositories", "{}")
      .file("manifest.json", manifest.dump());
  return p;
}

TEST_F(PackLayers, DockerSaveArchive) {
  fs::path archive = docker_archive(base_, lower_layer(), upper_layer());
  EXPECT_TRUE(looks_like_docker_archive(archive));
  EXPECT_FALSE(looks_like_docker_archive(lower_layer()));
  fs::create_directory(base_ / "unpacked");
  DockerImage image = unpack_docker_archive(archive, base_ / "unpacked");
  ASSERT_EQ(image.layers.size(), 2u);
  EXPECT_EQ(image.defaults.entrypoint, std::vector<std::string>{"/bin/app"});
  EXPECT_EQ(image.defaults.cmd, std::vector<std::string>{"--serve"});
  EXPECT_EQ(image.defaults.env, (std::vector<std::string>{"PATH=/usr/bin:/bin", "MODE=prod"}));
  EXPECT_EQ(image.defaults.workdir, "/srv");
  for (const auto& layer : image.layers) apply_layer(layer, root_, layer.string());
  EXPECT_FALSE(fs::exists(root_ / "etc/gone"));
  EXPECT_EQ(slurp(root_ / "cache/new"), "new");
}

TEST_F(PackLayers, DockerArchiveForAnotherArchitectureIsRefused) {
  fs::path archive = docker_archive(base_, lower_layer(), upper_layer(), "arm64");
  fs::create_directory(base_ / "unpacked");
  try {
    unpack_docker_archive(archive, base_ / "unpacked");
    FAIL() << "arm64 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("arm64"));
  }
}

TEST_F(PackLayers, DockerArchiveWithAMissingLayer) {
  fs::path p = base_ / "broken.tar";
  TarBuilder(p)
      .file("cfg.json", R"({"config":{}})")
      .file("manifest.json", R"([{"Config":"cfg.json","Layers":["cc33/layer.tar"]}])");
  fs::create_directory(base_ / "unpacked");
  try {
    unpack_docker_archive(p, base_ / "unpacked");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("lacks its layer 'cc33/layer.tar'"));
  }
}

TEST_F(PackLayers, ClassifySource) {
  EXPECT_EQ(classify_source("shell").kind, SourceKind::vial_image);
  EXPECT_EQ(classify_source(root_.string()).kind, SourceKind::directory);
  EXPECT_EQ(classify_source(lower_layer().string()).kind, SourceKind::tarball);
  EXPECT_EQ(classify_source(docker_archive(base_, lower_layer(), upper_layer()).string()).kind,
            SourceKind::docker_archive);
  EXPECT_EQ(classify_source("alpine:3.19").kind, SourceKind::docker_image);
  EXPECT_EQ(classify_source("ghcr.io/org/app:v1").kind, SourceKind::docker_image);
  try {
    classify_source((base_ / "missing.tar.gz").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
  std::ofstream(base_ / "notes.txt") << "not an archive";
  EXPECT_THROW(classify_source((base_ / "notes.txt").string()), Error);
  EXPECT_THROW(classify_source(""), Error);
}

}  // namespace
}  // namespace vial::pack
