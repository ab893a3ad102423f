// ExecRequest.as_root against the real agent in local mode (run as root, the agent drops
// user programs to uid 1000 as it does in a VM).
#include "agent_local_harness.h"

namespace {

using namespace vial::test::agent_local;

class AgentAsRoot : public AgentLocal {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the agent only drops privileges when it has them";
    AgentLocal::SetUp();
  }
};

TEST_F(AgentAsRoot, SandboxUserByDefaultRootOnRequest) {
  auto user = run(1, {{"argv", {"id", "-u"}}});
  ASSERT_TRUE(user.result);
  EXPECT_EQ(user.out, "1000\n");
  auto root = run(2, {{"argv", {"id", "-u"}}, {"as_root", true}});
  ASSERT_TRUE(root.result);
  EXPECT_EQ(root.out, "0\n");
  auto code = run(3, {{"language", "shell"}, {"code", "id -g"}, {"as_root", true}});
  ASSERT_TRUE(code.result);
  EXPECT_EQ(code.out, "0\n");
}

class AgentWarmAsRoot : public AgentWarm {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the agent only drops privileges when it has them";
    AgentWarm::SetUp();
  }
};

TEST_F(AgentWarmAsRoot, RootPythonStartsColdWarmStaysSandboxed) {
  auto root = py(1, "import os\nprint(os.getuid())", {{"as_root", true}});
  ASSERT_TRUE(root.result);
  EXPECT_EQ(root.out, "0\n");
  EXPECT_FALSE(root.result->warm) << "the zygote runs as the sandbox user";
  auto user = py(2, "import os\nprint(os.getuid())");
  ASSERT_TRUE(user.result);
  EXPECT_EQ(user.out, "1000\n");
  EXPECT_TRUE(user.result->warm);
}

}  // namespace
