// `vial pack create|inspect` end to end: every input kind, verification of damaged packs,
// and no temp files left behind. Packs of foreign root filesystems take the kernel and
// initramfs of a built image; tests use small busybox trees and the shell image.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../unit/pack_tar_builder.h"
#include "cli_harness.h"
#include "pack/pack.h"
#include "pack/sha256.h"
#include "pack_test_util.h"
#include "util/error.h"
#include "util/process.h"

namespace vial::test {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class PackCli : public VialHomeTest {
 protected:
  void SetUp() override {
    VialHomeTest::SetUp();
    work_ = home() / "work";
    fs::create_directories(work_);
  }
  void TearDown() override {
    // Nothing of a pack run may outlive it: no scratch folder, no half-written pack.
    EXPECT_EQ(dir_entries(home() / "cache"), std::vector<std::string>{}) << "left in " << home() / "cache";
    for (const auto& name : dir_entries(work_)) EXPECT_THAT(name, ::testing::Not(HasSubstr(".partial"))) << name;
    VialHomeTest::TearDown();
  }

  CliOptions small_disk() const {
    CliOptions o = options();
    o.env["VIAL_ROOTFS_HEADROOM_MIB"] = "16";  // small disks keep the tests quick
    return o;
  }

  // `vial pack create --image IMAGE -o OUT --json`; asserts success, returns its manifest.
  nlohmann::json create(const std::string& image, const fs::path& out, CliOptions opts) {
    CliResult r = vial({"pack", "create", "--image", image, "-o", out.string(), "--json"}, std::move(opts));
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.out;
    if (!j.is_object()) return {};
    EXPECT_EQ(j["path"], out.string());
    EXPECT_EQ(j["bytes"], fs::file_size(out));
    return j["manifest"];
  }

  // Extracts `pack` with the library and returns the folder holding its parts.
  fs::path extract(const fs::path& pack) {
    fs::path dest = work_ / (pack.filename().string() + ".parts");
    pack::extract(pack, dest);
    return dest;
  }

  // A pack of a foreign root filesystem: busybox contents, vial's mount points and home.
  void expect_busybox_disk(const fs::path& pack) {
    fs::path parts = extract(pack);
    for (const auto& name : pack::part_names()) EXPECT_TRUE(fs::is_regular_file(parts / name)) << name;
    Ext4Disk disk(parts / pack::kRootfsPart);
    EXPECT_EQ(disk.cat("/hello.txt"), "hello\n");
    EXPECT_THAT(disk.stat("/bin/busybox"), HasSubstr("Mode:  0755"));
    EXPECT_THAT(disk.stat("/tmp"), HasSubstr("Mode:  01777"));
    EXPECT_THAT(disk.stat("/home/sandbox"), HasSubstr("User:  1000"));
    for (const char* mount_point : {"/proc", "/sys", "/dev", "/run"}) EXPECT_TRUE(disk.exists(mount_point)) << mount_point;
  }

  fs::path work_;
};

TEST_F(PackCli, VialImageRoundTrip) {
  VIAL_REQUIRE_IMAGE("shell");
  const fs::path out = work_ / "shell.smolmachine";  // any name works
  nlohmann::json m = create("shell", out, options());
  EXPECT_EQ(m["source"]["kind"], "vial-image");
  EXPECT_EQ(m["format_version"], pack::kFormatVersion);
  EXPECT_EQ(m["arch"], "x86_64");

  fs::path parts = extract(out);
  const fs::path image = real_images_dir() / "shell";
  const std::map<std::string, fs::path> originals = {{pack::kKernelPart, image / "vmlinux"},
                                                     {pack::kInitramfsPart, image / "initramfs.img"},
                                                     {pack::kRootfsPart, image / "rootfs.qcow2"}};
  for (const auto& [name, original] : originals) {
    pack::FileDigest want = pack::digest_file(original);
    EXPECT_EQ(pack::digest_file(parts / name).sha256, want.sha256) << name;
    EXPECT_EQ(m["parts"][name]["sha256"], want.sha256) << name;
    EXPECT_EQ(m["parts"][name]["size"], want.size) << name;
  }

  CliResult plain = vial({"pack", "inspect", out.string()});
  EXPECT_EQ(plain.exit_code, 0) << plain.describe();
  EXPECT_THAT(plain.out, HasSubstr("vial-image shell"));
  EXPECT_THAT(plain.out, HasSubstr("rootfs.qcow2"));
}

TEST_F(PackCli, FolderRoundTrip) {
  VIAL_REQUIRE_IMAGE("python");
  make_busybox_rootfs(work_ / "rootfs");
  const fs::path out = work_ / "bb.vial";
  nlohmann::json m = create((work_ / "rootfs").string(), out, small_disk());
  EXPECT_EQ(m["source"]["kind"], "directory");
  EXPECT_FALSE(fs::exists(work_ / "rootfs/proc")) << "the input folder must not be changed";
  expect_busybox_disk(out);

  CliResult j = vial({"pack", "inspect", "--json", out.string()});
  ASSERT_EQ(j.exit_code, 0) << j.describe();
  EXPECT_EQ(nlohmann::json::parse(j.out)["manifest"], m);
}

class PackCliTarball : public PackCli, public ::testing::WithParamInterface<std::string> {};

TEST_P(PackCliTarball, RoundTrip) {
  VIAL_REQUIRE_IMAGE("python");
  make_busybox_rootfs(work_ / "rootfs");
  const fs::path tarball = work_ / ("rootfs" + GetParam());
  const std::string flag = GetParam() == ".tar.gz" ? "-z" : GetParam() == ".tar.zst" ? "--zstd" : "";
  std::vector<std::string> argv = {"tar", "-C", (work_ / "rootfs").string(), "-cf", tarball.string(), "."};
  if (!flag.empty()) argv.insert(argv.begin() + 1, flag);
  ASSERT_EQ(run_capture(argv, std::chrono::seconds(60)).exit_code, 0);
  const fs::path out = work_ / "bb.vial";
  nlohmann::json m = create(tarball.string(), out, small_disk());
  EXPECT_EQ(m["source"]["kind"], "tarball");
  expect_busybox_disk(out);
}

INSTANTIATE_TEST_SUITE_P(Compressions, PackCliTarball, ::testing::Values(".tar", ".tar.gz", ".tar.zst"),
                         [](const auto& info) { return info.param == ".tar" ? std::string("plain") : info.param.substr(5); });

// A docker save archive (legacy layout) of two layers: busybox, then a layer with a whiteout,
// an opaque directory and its own file in it.
fs::path docker_save_archive(const fs::path& dir) {
  make_busybox_rootfs(dir / "rootfs");
  const fs::path lower = dir / "lower.tar", upper = dir / "upper.tar", out = dir / "image.tar";
  EXPECT_EQ(run_capture({"tar", "-C", (dir / "rootfs").string(), "-cf", lower.string(), "."}, std::chrono::seconds(60))
                .exit_code,
            0);
  // A second layer with files the top one deletes.
  {
    TarBuilder add(dir / "lower2.tar");
    add.dir("etc/cache").file("etc/cache/stale", "stale").file("etc/remove-me", "x");
  }
  TarBuilder(upper)
      .file("etc/.wh.remove-me", "")
      .file("etc/cache/fresh", "fresh")
      .file("etc/cache/.wh..wh..opq", "")
      .file("app.txt", "app\n");
  nlohmann::json config = {{"architecture", "amd64"},
                           {"config",
                            {{"Entrypoint", {"/bin/sh", "-c"}},
                             {"Cmd", {"echo from-cmd"}},
                             {"Env", {"PATH=/bin", "GREETING=hi"}},
                             {"WorkingDir", "/srv"}}}};
  nlohmann::json manifest = nlohmann::json::array(
      {{{"Config", "c0ffee.json"}, {"RepoTags", {"bb:test"}}, {"Layers", {"a1/layer.tar", "a2/layer.tar", "a3/layer.tar"}}}});
  TarBuilder(out)
      .file_from("a1/layer.tar", lower)
      .file_from("a2/layer.tar", dir / "lower2.tar")
      .file_from("a3/layer.tar", upper)
      .file("c0ffee.json", config.dump())
      .file("manifest.json", manifest.dump());
  return out;
}

void expect_docker_pack(const nlohmann::json& m) {
  EXPECT_EQ(m["defaults"]["entrypoint"], nlohmann::json({"/bin/sh", "-c"}));
  EXPECT_EQ(m["defaults"]["cmd"], nlohmann::json({"echo from-cmd"}));
  EXPECT_EQ(m["defaults"]["env"], nlohmann::json({"PATH=/bin", "GREETING=hi"}));
  EXPECT_EQ(m["defaults"]["workdir"], "/srv");
}

TEST_F(PackCli, DockerSaveArchiveWithWhiteouts) {
  VIAL_REQUIRE_IMAGE("python");
  const fs::path archive = docker_save_archive(work_);
  const fs::path out = work_ / "app.vial";
  nlohmann::json m = create(archive.string(), out, small_disk());
  EXPECT_EQ(m["source"]["kind"], "docker-archive");
  expect_docker_pack(m);
  expect_busybox_disk(out);
  Ext4Disk disk(extract(out) / pack::kRootfsPart);
  EXPECT_EQ(disk.cat("/app.txt"), "app\n");
  EXPECT_FALSE(disk.exists("/etc/remove-me"));
  EXPECT_FALSE(disk.exists("/etc/.wh.remove-me"));
  EXPECT_FALSE(disk.exists("/etc/cache/stale"));
  EXPECT_EQ(disk.cat("/etc/cache/fresh"), "fresh");
  EXPECT_FALSE(disk.exists("/etc/cache/.wh..wh..opq"));
}

TEST_F(PackCli, DockerReferenceGoesThroughDockerSave) {
  VIAL_REQUIRE_IMAGE("python");
  const fs::path archive = docker_save_archive(work_);
  // A stand-in docker CLI that "saves" the archive above: the real one needs a daemon.
  const fs::path bin = work_ / "bin";
  fs::create_directories(bin);
  std::ofstream(bin / "docker") << "#!/bin/sh\n"
                                   "[ \"$1 $2 $4\" = \"save -o bb:test\" ] || { echo \"unexpected: $*\" >&2; exit 1; }\n"
                                   "cp '" << archive.string() << "' \"$3\"\n";
  fs::permissions(bin / "docker", fs::perms(0755));
  CliOptions opts = small_disk();
  opts.env["PATH"] = bin.string() + ":/usr/sbin:/usr/bin:/sbin:/bin";
  const fs::path out = work_ / "ref.vial";
  nlohmann::json m = create("bb:test", out, opts);
  EXPECT_EQ(m["source"]["kind"], "docker-image");
  EXPECT_EQ(m["source"]["ref"], "bb:test");
  expect_docker_pack(m);

  opts.env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";  // no docker
  CliResult r = vial({"pack", "create", "--image", "bb:other", "-o", (work_ / "none.vial").string()}, opts);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("docker CLI"));
  EXPECT_FALSE(fs::exists(work_ / "none.vial"));
}

TEST_F(PackCli, ExistingOutputNeedsForce) {
  VIAL_REQUIRE_IMAGE("shell");
  const fs::path out = work_ / "taken.vial";
  std::ofstream(out) << "mine";
  CliResult r = vial({"pack", "create", "--image", "shell", "-o", out.string()});
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_THAT(r.err, HasSubstr("already exists"));
  EXPECT_THAT(r.err, HasSubstr("--force"));
  std::ifstream in(out);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "mine");
  r = vial({"pack", "create", "--image", "shell", "-o", out.string(), "--force"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(vial({"pack", "inspect", out.string()}).exit_code, 0);
}

TEST_F(PackCli, BadInputsGetClearErrors) {
  CliResult r = vial({"pack", "create", "--image", (work_ / "missing.tar.gz").string(), "-o", (work_ / "x.vial").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("does not exist"));
  std::ofstream(work_ / "notes.txt") << "just text\n";
  r = vial({"pack", "create", "--image", (work_ / "notes.txt").string(), "-o", (work_ / "x.vial").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("notes.txt"));
  r = vial({"pack", "inspect", (work_ / "nothing.vial").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("does not exist"));
  r = vial({"pack", "inspect", (work_ / "notes.txt").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("is not a vial pack"));
  EXPECT_FALSE(fs::exists(work_ / "x.vial"));
}

// Damaged packs: truncated, a flipped byte, a newer format, something else entirely.
class PackCorrupt : public PackCli {
 protected:
  void SetUp() override {
    PackCli::SetUp();
    if (auto missing = missing_image("python")) GTEST_SKIP() << *missing;
    make_busybox_rootfs(work_ / "rootfs");
    good_ = work_ / "good.vial";
    create((work_ / "rootfs").string(), good_, small_disk());
  }
  fs::path copy(const std::string& name) {
    fs::path p = work_ / name;
    fs::copy_file(good_, p);
    return p;
  }
  // inspect and extract both refuse `pack` with a message containing `needle`.
  void expect_rejected(const fs::path& pack, const std::string& needle) {
    CliResult r = vial({"pack", "inspect", pack.string()});
    EXPECT_EQ(r.exit_code, 2) << r.describe();
    EXPECT_THAT(r.err, HasSubstr(needle)) << r.describe();
    const fs::path dest = work_ / "dest";
    try {
      pack::extract(pack, dest);
      ADD_FAILURE() << "extract accepted " << pack;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
    EXPECT_EQ(dir_entries(dest), std::vector<std::string>{}) << "a rejected pack left parts behind";
  }
  fs::path good_;
};

TEST_F(PackCorrupt, Truncated) {
  fs::path p = copy("truncated.vial");
  fs::resize_file(p, fs::file_size(p) / 2);
  expect_rejected(p, "is damaged");
  CliResult r = vial({"pack", "inspect", p.string()});
  EXPECT_THAT(r.err, HasSubstr("part '"));
}

TEST_F(PackCorrupt, FlippedByte) {
  for (double where : {0.3, 0.9}) {
    fs::path p = copy("flipped-" + std::to_string(static_cast<int>(where * 10)) + ".vial");
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(static_cast<double>(fs::file_size(p)) * where));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(static_cast<double>(fs::file_size(p)) * where));
    f.put(static_cast<char>(c ^ 0x10));
    f.close();
    expect_rejected(p, "is damaged");
  }
}

TEST_F(PackCorrupt, NewerFormatVersion) {
  // Re-pack the same parts with a manifest from the future, the way a newer vial would.
  const fs::path dir = work_ / "unpacked";
  fs::create_directories(dir);
  ASSERT_EQ(run_capture({"tar", "--zstd", "-C", dir.string(), "-xf", good_.string()}, std::chrono::seconds(60)).exit_code, 0);
  nlohmann::json m = nlohmann::json::parse(std::ifstream(dir / "manifest.json"));
  m["format_version"] = pack::kFormatVersion + 1;
  std::ofstream(dir / "manifest.json") << m.dump(2);
  const fs::path future = work_ / "future.vial";
  ASSERT_EQ(run_capture({"tar", "--zstd", "-C", dir.string(), "-cf", future.string(), "manifest.json", "vmlinux",
                         "initramfs", "rootfs.qcow2"},
                        std::chrono::seconds(60))
                .exit_code,
            0);
  expect_rejected(future, "made by a newer vial");
}

TEST_F(PackCorrupt, OtherArchivesAreNotPacks) {
  const fs::path tarball = work_ / "rootfs.tar";
  ASSERT_EQ(run_capture({"tar", "-C", (work_ / "rootfs").string(), "-cf", tarball.string(), "."}, std::chrono::seconds(60))
                .exit_code,
            0);
  expect_rejected(tarball, "is not a vial pack");
  expect_rejected(docker_save_archive(work_ / "docker"), "is not a vial pack");
}

TEST_F(PackCli, InterruptLeavesNothingBehind) {
  VIAL_REQUIRE_IMAGE("python");
  make_busybox_rootfs(work_ / "rootfs");
  const fs::path out = work_ / "interrupted.vial";
  auto p = start_vial({"pack", "create", "--image", (work_ / "rootfs").string(), "-o", out.string()}, small_disk());
  p->pump_for(std::chrono::milliseconds(300));
  p->send_signal(SIGINT);
  CliResult r = p->finish();
  // Whenever the signal landed, the run ends and cleans up (TearDown checks cache/ and work/).
  if (r.exit_code != 0) {
    EXPECT_FALSE(fs::exists(out)) << r.describe();
  }
}

}  // namespace
}  // namespace vial::test
