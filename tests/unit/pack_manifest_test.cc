#include "pack/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "util/error.h"

namespace vial::pack {
namespace {

using ::testing::HasSubstr;

PackManifest sample() {
  PackManifest m;
  m.created_at = "2024-05-01T12:00:00Z";
  m.created_by = "vial 0.1.0";
  m.source = {"docker-archive", "app.tar"};
  m.parts = {{kKernelPart, 10, std::string(64, 'a')},
             {kInitramfsPart, 20, std::string(64, 'b')},
             {kRootfsPart, 30, std::string(64, 'c')}};
  m.rootfs_virtual_size = 1 << 30;
  m.defaults = {{"/entry"}, {"serve", "--port", "80"}, {"PATH=/bin", "A=b=c"}, "/app"};
  return m;
}

std::string error_of(const nlohmann::json& j) {
  try {
    manifest_from_json(j, "x.vial");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
    return e.what();
  }
  return "no error";
}

TEST(PackManifest, JsonRoundTrip) {
  const PackManifest m = sample();
  nlohmann::json j = to_json(m);
  EXPECT_EQ(j["kind"], "vial-pack");
  EXPECT_EQ(j["format_version"], kFormatVersion);
  EXPECT_EQ(j["parts"]["rootfs.qcow2"]["size"], 30);
  PackManifest back = manifest_from_json(nlohmann::json::parse(j.dump()), "x.vial");
  EXPECT_EQ(to_json(back), j);
  ASSERT_EQ(back.parts.size(), 3u);
  EXPECT_EQ(back.parts[0].name, kKernelPart);
  EXPECT_EQ(back.part(kRootfsPart)->sha256, std::string(64, 'c'));
  EXPECT_EQ(back.defaults.cmd, (std::vector<std::string>{"serve", "--port", "80"}));
  EXPECT_EQ(back.defaults.workdir, "/app");
  EXPECT_EQ(back.rootfs_virtual_size, 1u << 30);
}

TEST(PackManifest, NewerFormatSaysUpgrade) {
  nlohmann::json j = to_json(sample());
  j["format_version"] = kFormatVersion + 1;
  EXPECT_THAT(error_of(j), HasSubstr("made by a newer vial"));
  EXPECT_THAT(error_of(j), HasSubstr("upgrade vial"));
}

TEST(PackManifest, NotAPackManifest) {
  EXPECT_THAT(error_of(nlohmann::json::array({{{"Config", "x.json"}}})), HasSubstr("x.vial is not a vial pack"));
  nlohmann::json j = to_json(sample());
  j.erase("kind");
  EXPECT_THAT(error_of(j), HasSubstr("not a vial pack"));
}

TEST(PackManifest, BadFieldsAreNamed) {
  nlohmann::json j = to_json(sample());
  j["parts"].erase("initramfs");
  EXPECT_THAT(error_of(j), HasSubstr("'parts.initramfs' is missing"));
  j = to_json(sample());
  j["parts"]["vmlinux"]["sha256"] = "xyz";
  EXPECT_THAT(error_of(j), HasSubstr("'parts.vmlinux.sha256'"));
  j = to_json(sample());
  j["parts"]["vmlinux"]["size"] = -1;
  EXPECT_THAT(error_of(j), HasSubstr("'parts.vmlinux.size'"));
  j = to_json(sample());
  j["defaults"]["env"] = "A=1";
  EXPECT_THAT(error_of(j), HasSubstr("'defaults.env' should be a list of strings"));
  j = to_json(sample());
  j["format_version"] = "1";
  EXPECT_THAT(error_of(j), HasSubstr("'format_version'"));
}

}  // namespace
}  // namespace vial::pack
