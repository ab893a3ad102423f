#include "vm/accel.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace vial {
namespace {

using ::testing::HasSubstr;

const KvmDeviceCheck kDeviceOk{true, ""};
const KvmDeviceCheck kDeviceMissing{false, "/dev/kvm does not exist (no KVM on this host)"};

TEST(DecideAccelTest, ForcedTcgWins) {
  auto a = decide_accel(std::string("tcg"), kDeviceOk, KvmProbe{true, ""});
  EXPECT_EQ(a.kind, AccelKind::tcg);
  EXPECT_THAT(a.reason, HasSubstr("VIAL_ACCEL=tcg"));
  EXPECT_STREQ(a.name(), "tcg");
}

TEST(DecideAccelTest, ForcedKvmWithAUsableDevice) {
  auto a = decide_accel(std::string("kvm"), kDeviceOk, KvmProbe{false, "hung"});
  EXPECT_EQ(a.kind, AccelKind::kvm);
  EXPECT_THAT(a.reason, HasSubstr("VIAL_ACCEL=kvm"));
  EXPECT_STREQ(a.name(), "kvm");
}

TEST(DecideAccelTest, ForcedKvmWithoutDeviceFallsBackToTcgAndSaysWhy) {
  auto a = decide_accel(std::string("kvm"), kDeviceMissing, std::nullopt);
  EXPECT_EQ(a.kind, AccelKind::tcg);
  EXPECT_THAT(a.reason, HasSubstr("does not exist"));
}

TEST(DecideAccelTest, DeviceProblemMeansTcgWithTheReason) {
  KvmDeviceCheck denied{false, "permission denied on /dev/kvm (add your user to the kvm group)"};
  auto a = decide_accel(std::nullopt, denied, std::nullopt);
  EXPECT_EQ(a.kind, AccelKind::tcg);
  EXPECT_THAT(a.reason, HasSubstr("permission denied on /dev/kvm"));
  EXPECT_THAT(a.reason, HasSubstr("TCG"));
}

TEST(DecideAccelTest, FailedProbeMeansTcg) {
  auto a = decide_accel(std::nullopt, kDeviceOk, KvmProbe{false, "no answer within 15 s"});
  EXPECT_EQ(a.kind, AccelKind::tcg);
  EXPECT_THAT(a.reason, HasSubstr("no answer within 15 s"));
}

TEST(DecideAccelTest, SuccessfulProbeMeansKvm) {
  EXPECT_EQ(decide_accel(std::nullopt, kDeviceOk, KvmProbe{true, ""}).kind, AccelKind::kvm);
}

TEST(DecideAccelTest, NoProbeTrustsTheDevice) {
  EXPECT_EQ(decide_accel(std::nullopt, kDeviceOk, std::nullopt).kind, AccelKind::kvm);
}

TEST(CheckKvmDeviceTest, NonexistentDevice) {
  auto check = check_kvm_device("/nonexistent/dev/kvm");
  EXPECT_FALSE(check.ok);
  EXPECT_THAT(check.problem, HasSubstr("/nonexistent/dev/kvm"));
  EXPECT_THAT(check.problem, HasSubstr("does not exist"));
}

TEST(CheckKvmDeviceTest, NotAKvmDevice) {
  auto check = check_kvm_device("/dev/null");
  EXPECT_FALSE(check.ok);
  EXPECT_FALSE(check.problem.empty());
}

}  // namespace
}  // namespace vial
