// The real vial-agent in `--serve-unix` mode, and a client speaking the protocol to it:
// fixtures shared by the agent's local tests (agent_local_test.cc, agent_session_test.cc).
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/protocol.h"

namespace vial::test::agent_local {

using namespace vial::agent;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

inline constexpr int kWaitMs = 20000;  // generous: this host is slow

struct ExecOutcome {
  std::string out, err;
  std::optional<ExecResult> result;
  std::optional<ErrorBody> error;
};

class AgentLocal : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("VIAL_AGENT_BIN");
    if (!bin || !*bin) bin = VIAL_TEST_AGENT_BIN;  // the agent built with this test binary
    char tmpl[] = "/tmp/vial-agent-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // World-writable so the sandbox uid (when the agent drops privileges) can use it.
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    std::string sock = dir_ + "/agent.sock";
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      if (warm())
        execl(bin, bin, "--serve-unix", sock.c_str(), "--warm", static_cast<char*>(nullptr));
      else
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

  virtual bool warm() const { return false; }

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

// The same agent with --warm: python execs fork from the zygote.
class AgentWarm : public AgentLocal {
 protected:
  bool warm() const override { return true; }

  void SetUp() override {
    if (access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
    AgentLocal::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(wait_warm()) << "the python zygote never became ready";
  }

  // Polls hello until python is listed as warm.
  bool wait_warm() {
    auto end = Clock::now() + std::chrono::milliseconds(kWaitMs);
    while (Clock::now() < end) {
      send_json(FrameType::hello, 500, {{"version", 1}});
      Frame f = expect_frame(FrameType::hello, 500);
      auto h = parse_body<HelloBody>(f.payload);
      for (const auto& l : h.warm)
        if (l == "python") return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  ExecOutcome py(uint32_t id, const std::string& code, json extra = json::object()) {
    extra["language"] = "python";
    extra["code"] = code;
    return run(id, extra);
  }

  // Pid of the agent's child that is the python zygote (a list, to catch duplicates).
  std::vector<pid_t> zygote_pids() {
    std::vector<pid_t> out;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream st(e.path() / "stat");
      std::string line;
      std::getline(st, line);
      auto close_paren = line.rfind(')');
      if (close_paren == std::string::npos) continue;
      std::istringstream rest(line.substr(close_paren + 2));
      char state;
      pid_t ppid = 0, pgrp = 0, session = 0;
      rest >> state >> ppid >> pgrp >> session;
      // The zygote leads its own session; its pre-forked spare (also our child) does not yet.
      if (ppid != pid_ || session != std::stoi(name)) continue;
      std::ifstream cl(e.path() / "cmdline");
      std::string cmd((std::istreambuf_iterator<char>(cl)), std::istreambuf_iterator<char>());
      if (cmd.find("python3") != std::string::npos) out.push_back(std::stoi(name));
    }
    return out;
  }
};


}  // namespace vial::test::agent_local
