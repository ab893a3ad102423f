#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sandbox/guest_files.h"
#include "util/error.h"

namespace vial {
namespace {

using ::testing::HasSubstr;

std::string rejection(std::string_view path) {
  try {
    return "accepted " + resolve_session_path(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_input) << e.what();
    return e.what();
  }
}

TEST(SessionPathTest, RelativePathsLiveUnderTheHome) {
  EXPECT_EQ(resolve_session_path("notes.txt"), "/home/sandbox/notes.txt");
  EXPECT_EQ(resolve_session_path("a/b/c.py"), "/home/sandbox/a/b/c.py");
  EXPECT_EQ(resolve_session_path("./a//b/./c/"), "/home/sandbox/a/b/c");
  EXPECT_EQ(resolve_session_path("."), "/home/sandbox");
  EXPECT_EQ(resolve_session_path("..."), "/home/sandbox/...") << "only '..' itself is special";
  EXPECT_EQ(resolve_session_path("a..b"), "/home/sandbox/a..b");
}

TEST(SessionPathTest, AbsolutePathsMustBeInTheHome) {
  EXPECT_EQ(resolve_session_path("/home/sandbox"), "/home/sandbox");
  EXPECT_EQ(resolve_session_path("/home/sandbox/"), "/home/sandbox");
  EXPECT_EQ(resolve_session_path("/home/sandbox/x/y"), "/home/sandbox/x/y");
  EXPECT_THAT(rejection("/etc/passwd"), HasSubstr("outside the sandbox home"));
  EXPECT_THAT(rejection("/home/sandboxer/x"), HasSubstr("outside"));
  EXPECT_THAT(rejection("/"), HasSubstr("outside"));
}

TEST(SessionPathTest, RejectsEmptyNulAndDotDot) {
  EXPECT_THAT(rejection(""), HasSubstr("empty"));
  EXPECT_THAT(rejection(std::string_view("a\0b", 3)), HasSubstr("NUL"));
  EXPECT_THAT(rejection(".."), HasSubstr("'..'"));
  EXPECT_THAT(rejection("a/../../etc/passwd"), HasSubstr("'..'"));
  EXPECT_THAT(rejection("a/.."), HasSubstr("'..'"));
  EXPECT_THAT(rejection("/home/sandbox/../root"), HasSubstr("'..'"));
}

}  // namespace
}  // namespace vial
