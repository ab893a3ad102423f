// Runs the real vial-agent in `--serve-unix` mode and speaks the protocol to it.
#include "agent_local_harness.h"

namespace {

using namespace vial::test::agent_local;

TEST_F(AgentLocal, HelloAndPing) {
  send_json(FrameType::hello, 1, {{"version", 1}});
  Frame f = expect_frame(FrameType::hello, 1);
  auto h = parse_body<HelloBody>(f.payload);
  EXPECT_EQ(h.version, kProtocolVersion);
  EXPECT_EQ(h.agent.rfind("vial-agent ", 0), 0u) << h.agent;
  EXPECT_FALSE(h.kernel.empty());
  send(FrameType::ping, 42);
  expect_frame(FrameType::pong, 42);
}

TEST_F(AgentLocal, HelloVersionMismatch) {
  send_json(FrameType::hello, 1, {{"version", 99}});
  EXPECT_EQ(expect_error(1).code, "version");
  expect_alive();
}

TEST_F(AgentLocal, ExecArgv) {
  auto o = run(1, {{"argv", {"echo", "hello", "world"}}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "hello world\n");
  EXPECT_EQ(o.result->exit_code, 0);
  EXPECT_FALSE(o.result->signal);
  EXPECT_FALSE(o.result->timed_out);
}

TEST_F(AgentLocal, ExecShellCodeExitCodeAndStderr) {
  auto o = run(1, {{"language", "shell"}, {"code", "echo out; echo err >&2; exit 7"}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "out\n");
  EXPECT_EQ(o.err, "err\n");
  EXPECT_EQ(o.result->exit_code, 7);
}

TEST_F(AgentLocal, EnvDefaultsAndOverrides) {
  auto o = run(1, {{"argv", {"sh", "-c", "echo $FOO:$LANG:$TERM:$PATH"}},
                   {"env", {{"FOO", "bar"}, {"TERM", "xterm"}}}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "bar:C.UTF-8:xterm:/usr/local/bin:/usr/bin:/bin\n");
}

TEST_F(AgentLocal, Cwd) {
  auto o = run(1, {{"argv", {"pwd"}}, {"cwd", "/usr"}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "/usr\n");
  auto bad = run(2, {{"argv", {"pwd"}}, {"cwd", "/no/such/dir"}});
  ASSERT_TRUE(bad.error);
  EXPECT_EQ(bad.error->code, "spawn_failed");
  expect_alive();
}

TEST_F(AgentLocal, CommandNotFoundIs127) {
  auto o = run(1, {{"argv", {"no-such-command-vial"}}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->exit_code, 127);
  EXPECT_NE(o.err.find("not found"), std::string::npos) << o.err;
}

TEST_F(AgentLocal, StdinFramesAndClose) {
  send_json(FrameType::exec, 1, {{"argv", {"cat"}}, {"stdin", true}});
  send(FrameType::stdin_, 1, "abc");
  send(FrameType::stdin_, 1, std::string("d\0e\n", 4));
  send(FrameType::stdin_, 1, "");
  auto o = collect(1);
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, std::string("abcd\0e\n", 7));
  EXPECT_EQ(o.result->exit_code, 0);
}

TEST_F(AgentLocal, StdinIsDevNullByDefault) {
  auto o = run(1, {{"argv", {"cat"}}, {"timeout_ms", 10000}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "");
  EXPECT_EQ(o.result->exit_code, 0);
  EXPECT_FALSE(o.result->timed_out);
}

TEST_F(AgentLocal, KillSignalsTheExec) {
  send_json(FrameType::exec, 1,
            {{"language", "shell"}, {"code", "echo started; sleep 60 & sleep 60"}});
  Frame f = expect_frame(FrameType::stdout_, 1);
  EXPECT_EQ(f.payload, "started\n");
  send_json(FrameType::kill, 1, {{"signal", 15}});
  auto o = collect(1);
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->signal, 15);
  EXPECT_FALSE(o.result->exit_code);
  EXPECT_FALSE(o.result->timed_out);
}

TEST_F(AgentLocal, SelfSignalReported) {
  auto o = run(1, {{"language", "shell"}, {"code", "kill -SEGV $$"}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->signal, SIGSEGV);
}

TEST_F(AgentLocal, TimeoutKillsWholeGroup) {
  std::string marker = dir_ + "/bg-alive";
  auto start = Clock::now();
  // The background child would touch the marker after 2 s if it survived the timeout.
  auto o = run(1, {{"language", "shell"},
                   {"code", "(sleep 2; touch " + marker + ") & sleep 60"},
                   {"timeout_ms", 300}});
  auto elapsed = Clock::now() - start;
  ASSERT_TRUE(o.result);
  EXPECT_TRUE(o.result->timed_out);
  EXPECT_EQ(o.result->signal, 9);
  EXPECT_FALSE(o.result->exit_code);
  EXPECT_LT(elapsed, std::chrono::seconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST_F(AgentLocal, BackgroundJobDoesNotKeepExecAlive) {
  auto start = Clock::now();
  auto o = run(1, {{"language", "shell"}, {"code", "sleep 60 & echo done"}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "done\n");
  EXPECT_EQ(o.result->exit_code, 0);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
}

TEST_F(AgentLocal, StdoutCapTruncates) {
  auto o = run(1, {{"argv", {"head", "-c", "300000", "/dev/zero"}},
                   {"stdout_limit", 1000}, {"stderr_limit", 10}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out.size(), 1000u);
  EXPECT_TRUE(o.result->stdout_truncated);
  EXPECT_FALSE(o.result->stderr_truncated);
  EXPECT_EQ(o.result->exit_code, 0);
}

TEST_F(AgentLocal, BinaryOutputIsByteExact) {
  std::string expected;
  for (int i = 0; i < 200000; ++i) expected.push_back(static_cast<char>((i * 7 + i / 256) & 0xff));
  std::string path = dir_ + "/blob";
  {
    FILE* fp = fopen(path.c_str(), "wb");
    ASSERT_TRUE(fp);
    fwrite(expected.data(), 1, expected.size(), fp);
    fclose(fp);
  }
  auto o = run(1, {{"argv", {"cat", path}}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->exit_code, 0) << o.err;
  EXPECT_EQ(o.out.size(), expected.size());
  EXPECT_TRUE(o.out == expected);
}

TEST_F(AgentLocal, UnknownFrameTypeGetsError) {
  std::string raw = encode_frame(FrameType::ping, 5, "xy");
  raw[4] = static_cast<char>(200);
  send_raw(raw);
  EXPECT_EQ(expect_error(5).code, "bad_frame");
  expect_alive();
}

TEST_F(AgentLocal, OversizedFrameGetsErrorAndStreamStaysInSync) {
  std::string header = encode_frame(FrameType::exec, 6, "");
  uint32_t len = kMaxPayload + 100;
  std::memcpy(header.data(), &len, 4);  // little-endian host
  send_raw(header);
  send_raw(std::string(len, 'x'));
  EXPECT_EQ(expect_error(6).code, "bad_frame");
  expect_alive();
}

TEST_F(AgentLocal, BadJsonAndInvalidRequests) {
  send(FrameType::exec, 1, "{not json");
  EXPECT_EQ(expect_error(1).code, "bad_request");
  send_json(FrameType::exec, 2, {{"code", "print(1)"}});
  EXPECT_EQ(expect_error(2).code, "bad_request");
  send_json(FrameType::exec, 3, {{"argv", {"true"}}, {"timeout_ms", 0}});
  EXPECT_EQ(expect_error(3).code, "bad_request");
  send_json(FrameType::exec, 4, {{"argv", "true"}});
  EXPECT_EQ(expect_error(4).code, "bad_request");
  send(FrameType::stdin_, 77, "x");
  EXPECT_EQ(expect_error(77).code, "unknown_request");
  send_json(FrameType::kill, 78, {{"signal", 9}});
  EXPECT_EQ(expect_error(78).code, "unknown_request");
  expect_alive();
}

TEST_F(AgentLocal, DuplicateRunningIdIsBusy) {
  send_json(FrameType::exec, 1, {{"argv", {"sleep", "60"}}});
  send_json(FrameType::exec, 1, {{"argv", {"true"}}});
  EXPECT_EQ(expect_error(1).code, "busy");
  send_json(FrameType::kill, 1, {{"signal", 9}});
  auto o = collect(1);
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->signal, 9);
}

TEST_F(AgentLocal, ConcurrentExecs) {
  constexpr int kN = 8;
  for (int i = 1; i <= kN; ++i)
    send_json(FrameType::exec, static_cast<uint32_t>(i),
              {{"language", "shell"},
               {"code", "sleep 0.2; echo id" + std::to_string(i) + "; exit " + std::to_string(i)}});
  std::map<uint32_t, std::string> out;
  std::map<uint32_t, int> codes;
  while (static_cast<int>(codes.size()) < kN) {
    auto f = recv();
    ASSERT_TRUE(f) << "timed out with " << codes.size() << " exits";
    if (f->type == FrameType::stdout_) out[f->request_id] += f->payload;
    if (f->type == FrameType::exit)
      codes[f->request_id] = parse_body<ExecResult>(f->payload).exit_code.value_or(-1);
    ASSERT_NE(f->type, FrameType::error) << f->payload;
  }
  for (int i = 1; i <= kN; ++i) {
    EXPECT_EQ(out[i], "id" + std::to_string(i) + "\n");
    EXPECT_EQ(codes[i], i);
  }
}

TEST_F(AgentLocal, ResourceUsageReported) {
  auto o = run(1, {{"argv", {"sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"}}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->exit_code, 0);
  EXPECT_GT(o.result->max_rss_kib, 0u);
  EXPECT_GE(o.result->wall_ms, o.result->cpu_ms / 4);
}

TEST_F(AgentLocal, ReseedValidation) {
  std::string good(128, 'a');
  send(FrameType::reseed, 1, "{nope");
  EXPECT_EQ(expect_error(1).code, "bad_request");
  send_json(FrameType::reseed, 2, json::object());
  EXPECT_EQ(expect_error(2).code, "bad_request");
  send_json(FrameType::reseed, 3, {{"entropy", std::string(126, 'a')}});
  EXPECT_EQ(expect_error(3).code, "bad_request");
  send_json(FrameType::reseed, 4, {{"entropy", std::string(127, 'a') + "x"}});
  EXPECT_EQ(expect_error(4).code, "bad_request");
  send_json(FrameType::reseed, 5, {{"entropy", good}, {"realtime_ns", -5}});
  EXPECT_EQ(expect_error(5).code, "bad_request");
  send_json(FrameType::reseed, 6, {{"entropy", 12}});
  EXPECT_EQ(expect_error(6).code, "bad_request");
  // Local mode leaves the host's RNG and clock alone but still acknowledges.
  send_json(FrameType::reseed, 7, {{"entropy", good}, {"realtime_ns", 1700000000000000000LL}});
  Frame f = expect_frame(FrameType::ok, 7);
  EXPECT_EQ(f.payload, "");
  expect_alive();
}

TEST_F(AgentWarm, OutputExitCodeAndWarmFlag) {
  auto o = py(1, "import sys\nprint('hi', __name__, sys.argv[0].endswith('main.py'))\n"
                 "print('uuid' in sys.modules)");
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "hi __main__ True\nTrue\n");
  EXPECT_EQ(o.err, "");
  EXPECT_EQ(o.result->exit_code, 0);
  EXPECT_TRUE(o.result->warm);
  auto s = run(2, {{"language", "shell"}, {"code", "echo sh"}});
  ASSERT_TRUE(s.result);
  EXPECT_EQ(s.out, "sh\n");
  EXPECT_FALSE(s.result->warm);
}

TEST_F(AgentWarm, ExceptionPrintsTracebackAndExits1) {
  auto o = py(1, "def f():\n    1/0\nf()\n");
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->exit_code, 1);
  EXPECT_TRUE(o.result->warm);
  EXPECT_EQ(o.err.rfind("Traceback (most recent call last):\n  File \"", 0), 0u) << o.err;
  EXPECT_NE(o.err.find("main.py\", line 3, in <module>"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("ZeroDivisionError: division by zero"), std::string::npos) << o.err;
  EXPECT_EQ(o.err.find("<string>"), std::string::npos) << "zygote frames leak: " << o.err;
  auto syn = py(2, "1 +\n");
  ASSERT_TRUE(syn.result);
  EXPECT_EQ(syn.result->exit_code, 1);
  EXPECT_NE(syn.err.find("SyntaxError"), std::string::npos) << syn.err;
}

TEST_F(AgentWarm, SystemExitHonoured) {
  auto o = py(1, "import sys\nprint('before')\nsys.exit(3)\nprint('after')");
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "before\n");
  EXPECT_EQ(o.result->exit_code, 3);
  auto m = py(2, "raise SystemExit('bye')");
  ASSERT_TRUE(m.result);
  EXPECT_EQ(m.result->exit_code, 1);
  EXPECT_EQ(m.err, "bye\n");
  auto z = py(3, "import atexit\natexit.register(lambda: print('atexit ran'))\nraise SystemExit");
  ASSERT_TRUE(z.result);
  EXPECT_EQ(z.result->exit_code, 0);
  EXPECT_EQ(z.out, "atexit ran\n");
}

TEST_F(AgentWarm, StdinEnvCwd) {
  send_json(FrameType::exec, 1,
            {{"language", "python"}, {"code", "import sys\nprint(sys.stdin.read().upper(), end='')"},
             {"stdin", true}});
  send(FrameType::stdin_, 1, "abc\n");
  send(FrameType::stdin_, 1, "");
  auto o = collect(1);
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "ABC\n");
  EXPECT_TRUE(o.result->warm);

  auto e = py(2, "import os\nprint(os.environ['FOO'], os.environ['LANG'], os.getcwd())",
              {{"env", {{"FOO", "bar"}}}, {"cwd", "/usr"}});
  ASSERT_TRUE(e.result);
  EXPECT_EQ(e.out, "bar C.UTF-8 /usr\n");
  // Nothing carries over from the previous exec's environment.
  auto n = py(3, "import os\nprint(os.environ.get('FOO'))");
  ASSERT_TRUE(n.result);
  EXPECT_EQ(n.out, "None\n");
  auto bad = py(4, "print(1)", {{"cwd", "/no/such/dir"}});
  ASSERT_TRUE(bad.error);
  EXPECT_EQ(bad.error->code, "spawn_failed");
  expect_alive();
}

TEST_F(AgentWarm, PythonEnvForcesColdStart) {
  auto o = py(1, "import sys\nprint(sys.flags.dont_write_bytecode)",
              {{"env", {{"PYTHONDONTWRITEBYTECODE", "1"}}}});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "1\n");
  EXPECT_FALSE(o.result->warm);
}

TEST_F(AgentWarm, OutputStreamsLive) {
  send_json(FrameType::exec, 1,
            {{"language", "python"}, {"code", "import time\nprint('early')\ntime.sleep(60)"},
             {"timeout_ms", 20000}});
  // Unbuffered like `python3 -u`: the text may come in several writes, all before the exit.
  std::string early;
  while (early.size() < 6) {
    Frame f = expect_frame(FrameType::stdout_, 1);
    if (f.type != FrameType::stdout_) break;
    early += f.payload;
  }
  EXPECT_EQ(early, "early\n");
  send_json(FrameType::kill, 1, {{"signal", 15}});
  auto o = collect(1);
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->signal, 15);
  EXPECT_TRUE(o.result->warm);
}

TEST_F(AgentWarm, TimeoutKillsProgramAndItsChildren) {
  std::string marker = dir_ + "/bg-alive";
  auto o = py(1,
              "import subprocess, time\n"
              "subprocess.Popen(['sh', '-c', 'sleep 2; touch " + marker + "'])\n"
              "time.sleep(60)",
              {{"timeout_ms", 500}});
  ASSERT_TRUE(o.result);
  EXPECT_TRUE(o.result->timed_out);
  EXPECT_EQ(o.result->signal, 9);
  EXPECT_TRUE(o.result->warm);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_FALSE(std::filesystem::exists(marker));
  // The zygote is unharmed.
  auto again = py(2, "print(2)");
  ASSERT_TRUE(again.result);
  EXPECT_EQ(again.out, "2\n");
  EXPECT_TRUE(again.result->warm);
}

TEST_F(AgentWarm, ConsecutiveExecsGetDifferentRandomness) {
  const std::string code =
      "import random, os, uuid\nprint(random.random(), os.urandom(16).hex(), uuid.uuid4())";
  std::set<std::string> seen;
  for (uint32_t id = 1; id <= 3; ++id) {
    auto o = py(id, code);
    ASSERT_TRUE(o.result);
    EXPECT_TRUE(o.result->warm);
    EXPECT_EQ(o.result->exit_code, 0) << o.err;
    std::istringstream in(o.out);
    std::string r, u, id4;
    in >> r >> u >> id4;
    EXPECT_TRUE(seen.insert("r" + r).second) << "random.random() repeated: " << r;
    EXPECT_TRUE(seen.insert("u" + u).second) << "os.urandom repeated: " << u;
    EXPECT_TRUE(seen.insert("i" + id4).second) << "uuid4 repeated: " << id4;
  }
  // After a reseed (what a restored clone gets), still fresh and still warm.
  send_json(FrameType::reseed, 10, {{"entropy", std::string(128, '7')}});
  expect_frame(FrameType::ok, 10);
  auto o = py(11, code);
  ASSERT_TRUE(o.result);
  EXPECT_TRUE(o.result->warm);
  std::istringstream in(o.out);
  std::string r;
  in >> r;
  EXPECT_TRUE(seen.insert("r" + r).second);
}

TEST_F(AgentWarm, FallsBackWhenZygoteIsKilledThenRecovers) {
  auto pids = zygote_pids();
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
  // Give the agent a moment to notice (it would also notice on the next request).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto o = py(1, "import sys\nprint('cold', 'uuid' in sys.modules)");
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.out, "cold False\n");
  EXPECT_EQ(o.result->exit_code, 0);
  EXPECT_FALSE(o.result->warm);
  ASSERT_TRUE(wait_warm()) << "zygote was not restarted";
  auto w = py(2, "print('warm again')");
  ASSERT_TRUE(w.result);
  EXPECT_EQ(w.out, "warm again\n");
  EXPECT_TRUE(w.result->warm);
  auto now = zygote_pids();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0], pids[0]);
}

TEST_F(AgentWarm, ConcurrentWarmExecs) {
  constexpr int kN = 6;
  for (int i = 1; i <= kN; ++i)
    send_json(FrameType::exec, static_cast<uint32_t>(i),
              {{"language", "python"},
               {"code", "import time, sys\ntime.sleep(0.2)\nprint('id" + std::to_string(i) +
                            "')\nsys.exit(" + std::to_string(i) + ")"}});
  std::map<uint32_t, std::string> out;
  std::map<uint32_t, ExecResult> res;
  while (static_cast<int>(res.size()) < kN) {
    auto f = recv();
    ASSERT_TRUE(f) << "timed out with " << res.size() << " exits";
    ASSERT_NE(f->type, FrameType::error) << f->payload;
    if (f->type == FrameType::stdout_) out[f->request_id] += f->payload;
    if (f->type == FrameType::exit) res[f->request_id] = parse_body<ExecResult>(f->payload);
  }
  for (int i = 1; i <= kN; ++i) {
    EXPECT_EQ(out[i], "id" + std::to_string(i) + "\n");
    EXPECT_EQ(res[i].exit_code, i);
    EXPECT_TRUE(res[i].warm);
  }
}

}  // namespace
