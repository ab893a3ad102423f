#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sandbox/runner.h"
#include "util/error.h"

namespace vial {
namespace {

using ::testing::HasSubstr;

RunRequest good() {
  RunRequest r;
  r.language = "python";
  r.code = "print(1)";
  return r;
}

// The message of the invalid_input Error validate() throws, or "" if it accepts the request.
std::string rejection(const RunRequest& r) {
  try {
    validate(r);
    return "";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_input) << e.what();
    return e.what();
  }
}

TEST(RunnerValidateTest, AcceptsAnOrdinaryRequest) {
  EXPECT_EQ(rejection(good()), "");
  for (const char* lang : {"python", "javascript", "shell"}) {
    auto r = good();
    r.language = lang;
    EXPECT_EQ(rejection(r), "") << lang;
  }
}

TEST(RunnerValidateTest, UnknownLanguage) {
  auto r = good();
  r.language = "cobol";
  EXPECT_THAT(rejection(r), HasSubstr("unknown language 'cobol'"));
  r.language = "";
  EXPECT_THAT(rejection(r), HasSubstr("unknown language"));
}

TEST(RunnerValidateTest, EmptyOrBlankCode) {
  auto r = good();
  r.code = "";
  EXPECT_THAT(rejection(r), HasSubstr("code is empty"));
  r.code = " \t\r\n ";
  EXPECT_THAT(rejection(r), HasSubstr("code is empty"));
}

TEST(RunnerValidateTest, CodeOrArgvButNotBoth) {
  auto r = good();
  r.argv = {"ls", "-l"};
  EXPECT_THAT(rejection(r), HasSubstr("either code or argv"));
  r.code = "";
  EXPECT_EQ(rejection(r), "");
  r.argv = {"", "x"};
  EXPECT_THAT(rejection(r), HasSubstr("argv[0]"));
  r.argv = {"ls", std::string("a\0b", 3)};
  EXPECT_THAT(rejection(r), HasSubstr("NUL"));
  r.argv.clear();
  EXPECT_THAT(rejection(r), HasSubstr("or an argv"));
}

TEST(RunnerValidateTest, TimeoutBounds) {
  auto r = good();
  r.timeout = std::chrono::seconds(0);
  EXPECT_THAT(rejection(r), HasSubstr("timeout"));
  r.timeout = std::chrono::seconds(-1);
  EXPECT_THAT(rejection(r), HasSubstr("timeout"));
  r.timeout = std::chrono::seconds(3601);
  EXPECT_THAT(rejection(r), HasSubstr("3600"));
  r.timeout = std::chrono::seconds(1);
  EXPECT_EQ(rejection(r), "");
  r.timeout = kMaxRunTimeout;
  EXPECT_EQ(rejection(r), "");
}

TEST(RunnerValidateTest, MemoryMinimum) {
  auto r = good();
  r.memory_mib = 63;
  EXPECT_THAT(rejection(r), HasSubstr("64"));
  r.memory_mib = 0;
  EXPECT_THAT(rejection(r), HasSubstr("64"));
  r.memory_mib = 64;
  EXPECT_EQ(rejection(r), "");
}

TEST(RunnerValidateTest, EnvironmentNames) {
  auto r = good();
  r.env[""] = "x";
  EXPECT_THAT(rejection(r), HasSubstr("environment"));
  r = good();
  r.env["A=B"] = "x";
  EXPECT_THAT(rejection(r), HasSubstr("A=B"));
  r = good();
  r.env[std::string("A\0B", 3)] = "x";
  EXPECT_NE(rejection(r), "");
  r = good();
  r.env["A"] = std::string("x\0y", 3);
  EXPECT_NE(rejection(r), "");
  r = good();
  r.env["EMPTY"] = "";
  r.env["WITH_EQ"] = "a=b";
  EXPECT_EQ(rejection(r), "");
}

}  // namespace
}  // namespace vial

namespace vial {
namespace {

// Issue 15 §1g: NULs in env and cwd are named precisely, and never cut the message.
TEST(RunnerValidateNulTest, EnvAndCwdNulsAreNamed) {
  RunRequest r;
  r.language = "python";
  r.code = "print(1)";
  r.env[std::string("K\0EY", 4)] = "v";
  try {
    validate(r);
    ADD_FAILURE() << "accepted a NUL in an env name";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'K\\0EY'"), std::string::npos) << e.what();
  }
  r.env.clear();
  r.env["KEY"] = std::string("a\0b", 3);
  try {
    validate(r);
    ADD_FAILURE() << "accepted a NUL in an env value";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the value of environment variable 'KEY'"), std::string::npos) << e.what();
  }
  r.env.clear();
  r.cwd = std::string("/tmp\0/x", 7);
  EXPECT_THROW(validate(r), Error);
}

}  // namespace
}  // namespace vial
