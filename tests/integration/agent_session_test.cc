// Notebook sessions (ExecRequest.session) against the real agent in local mode: state kept
// across cells, exceptions, SystemExit, timeouts (interrupt, then kill), separate sessions,
// one cell at a time; both with the python zygote (--warm) and started cold.
#include "agent_local_harness.h"

namespace {

using namespace vial::test::agent_local;

// The cases run against a cold agent (interpreters started by exec) and a warm one (forked
// from the zygote).
template <typename Base>
class SessionTest : public Base {
 protected:
  void SetUp() override {
    if (access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
    Base::SetUp();
  }

  ExecOutcome cell(uint32_t id, const std::string& code, const std::string& session = "nb",
                   json extra = json::object()) {
    extra["language"] = "python";
    extra["code"] = code;
    extra["session"] = session;
    return this->run(id, extra);
  }
};

using Sessions = ::testing::Types<AgentLocal, AgentWarm>;
template <typename T>
class AgentSession : public SessionTest<T> {};
TYPED_TEST_SUITE(AgentSession, Sessions);

TYPED_TEST(AgentSession, VariablesImportsAndFunctionsSurvive) {
  auto a = this->cell(1, "x = 41\nimport json\ndef f():\n    return x + 1\n");
  ASSERT_TRUE(a.result) << a.error->message;
  EXPECT_EQ(a.result->exit_code, 0) << a.err;
  EXPECT_EQ(a.out, "");
  auto b = this->cell(2, "print(f(), json.dumps([x]))");
  ASSERT_TRUE(b.result);
  EXPECT_EQ(b.out, "42 [41]\n") << b.err;
  EXPECT_EQ(b.err, "");
  EXPECT_EQ(b.result->exit_code, 0);
  EXPECT_TRUE(b.result->warm) << "a running session is warm";
  auto c = this->cell(3, "x += 1\nprint(x, __name__)");
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.out, "42 __main__\n");
}

TYPED_TEST(AgentSession, ExceptionAndSystemExitKeepState) {
  auto a = this->cell(1, "y = 5\ndef boom():\n    return 1 / 0\nboom()\n");
  ASSERT_TRUE(a.result);
  EXPECT_EQ(a.result->exit_code, 1);
  EXPECT_EQ(a.err.rfind("Traceback (most recent call last):\n", 0), 0u) << a.err;
  EXPECT_NE(a.err.find("\"<cell 1>\", line 4, in <module>"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("return 1 / 0"), std::string::npos) << "source lines in the traceback: " << a.err;
  EXPECT_NE(a.err.find("ZeroDivisionError: division by zero"), std::string::npos) << a.err;
  auto b = this->cell(2, "import sys\nprint(y)\nsys.exit(3)\nprint('not here')");
  ASSERT_TRUE(b.result);
  EXPECT_EQ(b.out, "5\n");
  EXPECT_EQ(b.result->exit_code, 3);
  auto c = this->cell(3, "1 +\n");
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.result->exit_code, 1);
  EXPECT_NE(c.err.find("SyntaxError"), std::string::npos) << c.err;
  auto d = this->cell(4, "print(y * 2)");
  ASSERT_TRUE(d.result);
  EXPECT_EQ(d.out, "10\n") << d.err;
  EXPECT_EQ(d.result->exit_code, 0);
}

TYPED_TEST(AgentSession, StdinAndCwdPerCell) {
  this->send_json(FrameType::exec, 1,
                  {{"language", "python"}, {"code", "import sys\nfirst = sys.stdin.readline()\nprint(first.upper(), end='')"},
                   {"session", "nb"}, {"stdin", true}});
  this->send(FrameType::stdin_, 1, "abc\nleft over\n");
  this->send(FrameType::stdin_, 1, "");
  auto a = this->collect(1);
  ASSERT_TRUE(a.result);
  EXPECT_EQ(a.out, "ABC\n");
  auto b = this->cell(2, "import sys, os\nprint(repr(sys.stdin.read()), first.strip(), os.getcwd())", "nb",
                      {{"cwd", "/usr"}});
  ASSERT_TRUE(b.result);
  EXPECT_EQ(b.out, "'' abc /usr\n") << "no stale stdin from the previous cell: " << b.err;
  auto c = this->cell(3, "import os\nos.environ['KEEP'] = 'kept'\nprint(os.getcwd())", "nb", {{"env", {{"A", "1"}}}});
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.out, "/usr\n") << "the working directory carries over like any state";
  auto d = this->cell(4, "import os\nprint(os.environ['A'], os.environ['KEEP'])");
  ASSERT_TRUE(d.result);
  EXPECT_EQ(d.out, "1 kept\n") << d.err;
}

TYPED_TEST(AgentSession, TimeoutInterruptsTheCellAndKeepsState) {
  auto a = this->cell(1, "z = 7");
  ASSERT_TRUE(a.result);
  auto b = this->cell(2, "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.01)\n", "nb",
                      {{"timeout_ms", 500}});
  ASSERT_TRUE(b.result);
  EXPECT_TRUE(b.result->timed_out);
  EXPECT_EQ(b.result->signal, SIGINT) << "interrupted, not killed";
  EXPECT_EQ(b.out, "started\n");
  EXPECT_NE(b.err.find("KeyboardInterrupt"), std::string::npos) << b.err;
  auto c = this->cell(3, "print(z)");
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.out, "7\n");
  EXPECT_EQ(c.err, "");
}

TYPED_TEST(AgentSession, ACellIgnoringTheInterruptCostsTheState) {
  auto a = this->cell(1, "w = 1");
  ASSERT_TRUE(a.result);
  auto b = this->cell(2, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n", "nb",
                      {{"timeout_ms", 300}});
  ASSERT_TRUE(b.result);
  EXPECT_TRUE(b.result->timed_out);
  EXPECT_EQ(b.result->signal, SIGKILL);
  auto c = this->cell(3, "print('w' in globals())");
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.out, "False\n");
  EXPECT_NE(c.err.find("interpreter was restarted"), std::string::npos) << c.err;
  EXPECT_NE(c.err.find("timed out"), std::string::npos) << c.err;
  EXPECT_EQ(c.result->exit_code, 0);
  auto d = this->cell(4, "print(1)");
  ASSERT_TRUE(d.result);
  EXPECT_EQ(d.err, "") << "the restart is told once";
}

TYPED_TEST(AgentSession, InterpreterExitLosesStateAndSaysSo) {
  auto a = this->cell(1, "v = 1");
  ASSERT_TRUE(a.result);
  auto b = this->cell(2, "import os\nos._exit(4)");
  ASSERT_TRUE(b.result);
  EXPECT_EQ(b.result->exit_code, 4);
  auto c = this->cell(3, "print('v' in globals())");
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.out, "False\n");
  EXPECT_NE(c.err.find("exited with code 4"), std::string::npos) << c.err;
}

TYPED_TEST(AgentSession, SessionsAreSeparateAndOneShotExecsShareNothing) {
  ASSERT_TRUE(this->cell(1, "a = 1", "one").result);
  auto b = this->cell(2, "print('a' in globals())", "two");
  ASSERT_TRUE(b.result);
  EXPECT_EQ(b.out, "False\n");
  auto c = this->run(3, {{"language", "python"}, {"code", "print('a' in globals())"}});
  ASSERT_TRUE(c.result);
  EXPECT_EQ(c.out, "False\n");
  auto d = this->cell(4, "print(a)", "one");
  ASSERT_TRUE(d.result);
  EXPECT_EQ(d.out, "1\n");
}

TYPED_TEST(AgentSession, OneCellAtATimeAndLimits) {
  this->send_json(FrameType::exec, 1,
                  {{"language", "python"}, {"code", "import time\nprint('in', flush=True)\ntime.sleep(60)"},
                   {"session", "nb"}});
  // A SIGINT before the cell runs would hit the interpreter's startup: wait for its output
  // (unbuffered like python -u: it may come in several frames).
  std::string started;
  while (started.size() < 3) {
    Frame f = this->expect_frame(FrameType::stdout_, 1);
    if (f.type != FrameType::stdout_) break;
    started += f.payload;
  }
  EXPECT_EQ(started, "in\n");
  auto busy = this->cell(2, "print(1)");
  ASSERT_TRUE(busy.error);
  EXPECT_EQ(busy.error->code, "busy");
  this->send_json(FrameType::kill, 1, {{"signal", SIGINT}});
  auto first = this->collect(1);
  ASSERT_TRUE(first.result);
  EXPECT_EQ(first.result->exit_code, 1) << "KeyboardInterrupt: " << first.err;
  auto big = this->cell(3, "print('x' * 100000)", "nb", {{"stdout_limit", 10}});
  ASSERT_TRUE(big.result);
  EXPECT_EQ(big.out, "xxxxxxxxxx");
  EXPECT_TRUE(big.result->stdout_truncated);
  auto bad = this->run(4, {{"argv", {"true"}}, {"session", "nb"}});
  ASSERT_TRUE(bad.error);
  EXPECT_EQ(bad.error->code, "bad_request");
  this->expect_alive();
}

}  // namespace

namespace {

using AgentWarmSession = SessionTest<AgentWarm>;

TEST_F(AgentWarmSession, AtMost32LiveSessionsAndDeadOnesMakeRoom) {
  for (uint32_t i = 1; i <= 32; ++i) {
    auto o = cell(i, "x = 1", "s" + std::to_string(i));
    ASSERT_TRUE(o.result) << i << ": " << o.error->message;
  }
  auto full = cell(100, "x = 1", "one-too-many");
  ASSERT_TRUE(full.error);
  EXPECT_EQ(full.error->code, "spawn_failed");
  EXPECT_NE(full.error->message.find("too many sessions"), std::string::npos) << full.error->message;
  auto gone = cell(101, "import os\nos._exit(0)", "s1");
  ASSERT_TRUE(gone.result);
  auto room = cell(102, "print('fits')", "one-too-many");
  ASSERT_TRUE(room.result) << room.error->message;
  EXPECT_EQ(room.out, "fits\n");
}

}  // namespace
