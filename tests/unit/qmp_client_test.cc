// QmpClient against a scripted peer on a socketpair: the only way to produce a torn stream
// (QEMU's id-less "JSON parse error") or out-of-order replies on demand.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

#include "qmp/qmp_client.h"

namespace vial {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;
using namespace boost::asio::experimental::awaitable_operators;

constexpr const char* kGreeting = R"({"QMP": {"version": {}, "capabilities": ["oob"]}})";

// The QEMU end of the conversation: reads commands, writes whatever the test scripts.
class FakeQemu {
 public:
  explicit FakeQemu(QmpClient::Socket socket) : socket_(std::move(socket)) {}

  asio::awaitable<json> read_command() {
    const size_t n = co_await asio::async_read_until(socket_, asio::dynamic_buffer(in_), '\n', asio::use_awaitable);
    json command = json::parse(in_.substr(0, n));
    in_.erase(0, n);
    co_return command;
  }
  asio::awaitable<void> send(std::string line) {
    line += "\r\n";
    co_await asio::async_write(socket_, asio::buffer(line), asio::use_awaitable);
  }
  asio::awaitable<void> reply(const json& command, json value) {
    json answer = {{"return", std::move(value)}, {"id", command["id"]}};
    co_await send(answer.dump());
  }
  void close() { socket_.close(); }
  // Greeting, then the answer to qmp_capabilities.
  asio::awaitable<void> handshake() {
    co_await send(kGreeting);
    const json caps = co_await read_command();
    EXPECT_EQ(caps["execute"], "qmp_capabilities");
    co_await reply(caps, json::object());
  }

 private:
  QmpClient::Socket socket_;
  std::string in_;
};

class QmpClientTest : public ::testing::Test {
 protected:
  QmpClientTest() : ours_(io_), theirs_(io_) { asio::local::connect_pair(ours_, theirs_); }

  // Runs the client side and the fake QEMU side together; returns the client side's result.
  template <typename T>
  T run(asio::awaitable<T> client_side, asio::awaitable<void> qemu_side) {
    auto qemu = asio::co_spawn(io_, std::move(qemu_side), asio::use_future);
    auto client = asio::co_spawn(io_, std::move(client_side), asio::use_future);
    io_.run();
    qemu.get();
    return client.get();
  }

  // Attaches, runs one command and returns the error it failed with ("" if it succeeded; a
  // missed failure shows as "no answer" after 20 s). The connection must be gone afterwards.
  asio::awaitable<std::string> error_of_one_command() {
    auto qmp = co_await QmpClient::attach(std::move(ours_));
    std::string caught;
    try {
      const std::string command = "query-status";
      co_await qmp->execute(command, nullptr, std::chrono::seconds(20));
    } catch (const Error& e) {
      caught = e.what();
    }
    EXPECT_FALSE(qmp->connected());
    co_return caught;
  }

  asio::io_context io_;
  QmpClient::Socket ours_;
  QmpClient::Socket theirs_;
};

TEST_F(QmpClientTest, AttachReadsTheGreetingAndLeavesNegotiationMode) {
  FakeQemu qemu(std::move(theirs_));
  auto client = [&]() -> asio::awaitable<json> {
    auto qmp = co_await QmpClient::attach(std::move(ours_));
    json greeting = qmp->greeting();
    qmp->close();
    co_return greeting;
  };
  const json greeting = run(client(), qemu.handshake());
  EXPECT_TRUE(greeting.contains("QMP"));
}

TEST_F(QmpClientTest, RepliesAreMatchedByIdNotByOrder) {
  FakeQemu qemu(std::move(theirs_));
  auto qemu_side = [&]() -> asio::awaitable<void> {
    co_await qemu.handshake();
    const json first = co_await qemu.read_command();
    const json second = co_await qemu.read_command();
    co_await qemu.reply(second, second["execute"]);
    co_await qemu.reply(first, first["execute"]);
  };
  auto client = [&]() -> asio::awaitable<std::pair<json, json>> {
    auto qmp = co_await QmpClient::attach(std::move(ours_));
    const std::string a = "query-a";
    const std::string b = "query-b";
    auto [ra, rb] = co_await (qmp->execute(a) && qmp->execute(b));
    qmp->close();
    co_return std::make_pair(ra, rb);
  };
  auto [a, b] = run(client(), qemu_side());
  EXPECT_EQ(a, "query-a");
  EXPECT_EQ(b, "query-b");
}

TEST_F(QmpClientTest, EventWatchedBeforeItsCommandIsNotMissed) {
  FakeQemu qemu(std::move(theirs_));
  auto qemu_side = [&]() -> asio::awaitable<void> {
    co_await qemu.handshake();
    const json command = co_await qemu.read_command();
    // The event the command causes comes before the command's own answer.
    co_await qemu.send(R"({"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "concluded"}})");
    co_await qemu.reply(command, json::object());
  };
  auto client = [&]() -> asio::awaitable<json> {
    auto qmp = co_await QmpClient::attach(std::move(ours_));
    auto waiter = qmp->watch_event("JOB_STATUS_CHANGE");
    const std::string command = "blockdev-create";
    co_await qmp->execute(command);
    json data = co_await waiter->wait();
    qmp->close();
    co_return data;
  };
  EXPECT_EQ(run(client(), qemu_side()).value("status", ""), "concluded");
}

TEST_F(QmpClientTest, RefusalKeepsQmpErrorClassAndDesc) {
  FakeQemu qemu(std::move(theirs_));
  auto qemu_side = [&]() -> asio::awaitable<void> {
    co_await qemu.handshake();
    const json command = co_await qemu.read_command();
    json answer = {{"error", {{"class", "DeviceNotFound"}, {"desc", "no such node"}}}, {"id", command["id"]}};
    co_await qemu.send(answer.dump());
  };
  auto client = [&]() -> asio::awaitable<std::string> {
    auto qmp = co_await QmpClient::attach(std::move(ours_));
    std::string caught;
    try {
      const std::string command = "blockdev-del";
      co_await qmp->execute(command);
    } catch (const QmpError& e) {
      caught = e.error_class() + ": " + e.what();
    }
    qmp->close();
    co_return caught;
  };
  EXPECT_EQ(run(client(), qemu_side()), "DeviceNotFound: no such node");
}

// QEMU answers a command it could not parse with an error that has no id. No pending command
// will ever get its answer then: they fail at once, not after their deadline.
TEST_F(QmpClientTest, ErrorWithoutIdFailsPendingCommandsAtOnce) {
  FakeQemu qemu(std::move(theirs_));
  auto qemu_side = [&]() -> asio::awaitable<void> {
    co_await qemu.handshake();
    co_await qemu.read_command();
    co_await qemu.send(R"({"error": {"class": "GenericError", "desc": "JSON parse error, missing : in object pair"}})");
  };
  const std::string error = run(error_of_one_command(), qemu_side());
  EXPECT_THAT(error, HasSubstr("could not parse a command"));
  EXPECT_THAT(error, HasSubstr("missing : in object pair"));
}

TEST_F(QmpClientTest, QemuClosingFailsPendingCommands) {
  FakeQemu qemu(std::move(theirs_));
  auto qemu_side = [&]() -> asio::awaitable<void> {
    co_await qemu.handshake();
    co_await qemu.read_command();
    qemu.close();
  };
  EXPECT_THAT(run(error_of_one_command(), qemu_side()), HasSubstr("QEMU closed the QMP socket"));
}

}  // namespace
}  // namespace vial
