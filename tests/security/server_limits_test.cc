// `vial serve` under connection abuse (issue 15 §1a): a client holding many connections with
// half-sent headers can't stop the server from accepting, a half-sent header is timed out,
// and a TCP client's token is checked before its body is read. Raw sockets, a real server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cli_harness.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace vial::test {
namespace {

int connect_unix(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_tcp(unsigned short port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the server sends until it closes the connection or `timeout` passes.
std::string read_reply(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  std::string out;
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
    if (out.find("\r\n\r\n") != std::string::npos && out.find("Connection: close") == std::string::npos &&
        out.find("connection: close") == std::string::npos)
      break;
  }
  return out;
}

void send_all(int fd, const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), (ssize_t)s.size()); }

class ServerLimitsTest : public VialHomeTest {
 protected:
  void TearDown() override {
    if (server_) {
      server_->send_signal(SIGTERM);
      CliResult r = server_->finish();
      EXPECT_EQ(r.exit_code, 0) << r.describe();
      server_.reset();
    }
    VialHomeTest::TearDown();
  }

  fs::path socket() const { return home() / "run" / "vial.sock"; }

  // `vial serve` with no warm pool under `ulimit -n fd_limit`; waits for /healthz.
  void start_server(int fd_limit, const std::vector<std::string>& extra = {}) {
    std::string cmd = "ulimit -n " + std::to_string(fd_limit) + " && exec '" + vial_binary().string() +
                      "' serve --pool python=0";
    for (const auto& e : extra) cmd += " '" + e + "'";
    CliOptions o = options();
    o.deadline = 600s;
    server_ = std::make_unique<CliProcess>(std::vector<std::string>{"/bin/sh", "-c", cmd}, o);
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < until) {
      if (!server_->pump_for(100ms)) break;
      if (healthz_answers(1s)) return;
    }
    FAIL() << "vial serve did not come up: " << server_->finish().describe();
  }

  bool healthz_answers(std::chrono::milliseconds timeout) {
    int fd = connect_unix(socket());
    if (fd < 0) return false;
    std::string req = "GET /healthz HTTP/1.1\r\nHost: vial\r\nConnection: close\r\n\r\n";
    bool ok = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()) &&
              read_reply(fd, timeout).starts_with("HTTP/1.1 200");
    ::close(fd);
    return ok;
  }

  std::unique_ptr<CliProcess> server_;
};

TEST_F(ServerLimitsTest, HalfSentHeadersCannotStopTheServerAccepting) {
  // The probe's repro: 128 fds, 150 connections that each send half a header, 100 closed.
  start_server(128);
  std::vector<int> held;
  for (int i = 0; i < 150; ++i) {
    int fd = connect_unix(socket());
    if (fd < 0) continue;  // refused while full: fine, as long as the server comes back
    ::send(fd, "GET /healthz HTTP/1.1\r\nHo", 25, MSG_NOSIGNAL);
    held.push_back(fd);
    server_->pump_for(5ms);
  }
  for (size_t i = 0; i < 100 && i < held.size(); ++i) ::close(held[i]);
  held.erase(held.begin(), held.begin() + std::min<size_t>(100, held.size()));
  bool answered = false;
  for (int attempt = 0; attempt < 20 && !answered; ++attempt) {
    answered = healthz_answers(2s);
    server_->pump_for(100ms);
  }
  EXPECT_TRUE(answered) << "/healthz never answered after the abuse";
  for (int fd : held) ::close(fd);
  // And it keeps answering.
  EXPECT_TRUE(healthz_answers(5s));
}

TEST_F(ServerLimitsTest, AHalfSentHeaderIsTimedOut) {
  start_server(1024);
  int fd = connect_unix(socket());
  ASSERT_GE(fd, 0);
  send_all(fd, "GET /healthz HTTP/1.1\r\nHost: vi");
  bool closed = false;
  const auto start = std::chrono::steady_clock::now();
  std::string got = read_reply(fd, 30s, &closed);
  const auto waited = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_TRUE(closed) << "the server kept a half-sent header open for 30 s; it sent: " << got;
  EXPECT_GE(waited, 5s) << "closed too early";
}

TEST_F(ServerLimitsTest, TheTokenIsCheckedBeforeTheBodyIsRead) {
  const fs::path token = home() / "token";
  std::ofstream(token) << "0123456789abcdef0123456789abcdef\n";
  fs::permissions(token, fs::perms::owner_read | fs::perms::owner_write);
  const unsigned short port = free_loopback_port();
  start_server(1024, {"--listen", "127.0.0.1:" + std::to_string(port), "--token-file", token.string()});
  for (const std::string& auth : {std::string(), std::string("Authorization: Bearer wrong-token-wrong-token\r\n")}) {
    int fd = connect_tcp(port);
    ASSERT_GE(fd, 0);
    // A header announcing 100 MB, and no body: the refusal must come without waiting for it.
    send_all(fd, "POST /v1/run HTTP/1.1\r\nHost: vial\r\nContent-Type: application/json\r\n" + auth +
                     "Content-Length: 100000000\r\n\r\n");
    std::string reply = read_reply(fd, 5s);
    ::close(fd);
    EXPECT_TRUE(reply.starts_with(auth.empty() ? "HTTP/1.1 401" : "HTTP/1.1 403")) << "got: " << reply;
  }
  EXPECT_TRUE(healthz_answers(5s));
}

}  // namespace
}  // namespace vial::test
