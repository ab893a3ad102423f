// Runs the real vial-agent in `--serve-unix` mode and speaks the protocol to it.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "agent/protocol.h"

namespace {

using namespace vial::agent;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kWaitMs = 20000;  // generous: this host is slow

struct ExecOutcome {
  std::string out, err;
  std::optional<ExecResult> result;
  std::optional<ErrorBody> error;
};

class AgentLocal : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("VIAL_AGENT_BIN");
    if (!bin || !*bin) GTEST_SKIP() << "VIAL_AGENT_BIN not set";
    char tmpl[] = "/tmp/vial-agent-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // World-writable so the sandbox uid (when the agent drops privileges) can use it.
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    std::string sock = dir_ + "/agent.sock";
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      execl(bin, bin, "--serve-unix", sock.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    auto end = Clock::now() + std::chrono::milliseconds(kWaitMs);
    while (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ASSERT_LT(Clock::now(), end) << "agent did not listen on " << sock;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void send_raw(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << strerror(errno);
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }
  void send(FrameType t, uint32_t id, std::string_view payload = {}) {
    send_raw(encode_frame(t, id, payload));
  }
  void send_json(FrameType t, uint32_t id, const json& j) { send(t, id, j.dump()); }

  // Next frame, or nullopt after the deadline / on EOF.
  std::optional<Frame> recv(int timeout_ms = kWaitMs) {
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (auto item = decoder_.next()) {
        if (item->frame) return item->frame;
        ADD_FAILURE() << "agent sent an undecodable frame: " << item->error->message;
        continue;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[65536];
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }

  Frame expect_frame(FrameType t, uint32_t id) {
    auto f = recv();
    EXPECT_TRUE(f.has_value()) << "no frame";
    if (!f) return {};
    EXPECT_EQ(type_name(f->type), type_name(t)) << f->payload;
    EXPECT_EQ(f->request_id, id);
    return *f;
  }

  ErrorBody expect_error(uint32_t id) {
    Frame f = expect_frame(FrameType::error, id);
    return f.type == FrameType::error ? parse_body<ErrorBody>(f.payload) : ErrorBody{};
  }

  // Collects an exec's frames (other ids are kept in `others_`) until exit or error.
  ExecOutcome collect(uint32_t id) {
    ExecOutcome o;
    for (;;) {
      auto f = recv();
      if (!f) {
        ADD_FAILURE() << "exec " << id << " did not finish";
        return o;
      }
      if (f->request_id != id) {
        others_[f->request_id].push_back(*f);
        continue;
      }
      switch (f->type) {
        case FrameType::stdout_: o.out += f->payload; break;
        case FrameType::stderr_: o.err += f->payload; break;
        case FrameType::exit: o.result = parse_body<ExecResult>(f->payload); return o;
        case FrameType::error: o.error = parse_body<ErrorBody>(f->payload); return o;
        default: ADD_FAILURE() << "unexpected frame " << type_name(f->type); return o;
      }
    }
  }

  ExecOutcome run(uint32_t id, const json& req) {
    send_json(FrameType::exec, id, req);
    return collect(id);
  }

  void expect_alive() {
    send(FrameType::ping, 999);
    expect_frame(FrameType::pong, 999);
  }

  std::string dir_;
  pid_t pid_ = -1;
  int fd_ = -1;
  FrameDecoder decoder_;
  std::map<uint32_t, std::vector<Frame>> others_;
};

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

}  // namespace
