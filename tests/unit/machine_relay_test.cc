// The supervisor's relay, against a fake guest on a socketpair: clients with clashing request
// ids, hello answered by the relay, a client's programs killed when it leaves, guest loss.
#include <stdlib.h>

#include <filesystem>
#include <set>
#include <sstream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "machine/agent_relay.h"
#include "vm/agent_client.h"

namespace fs = std::filesystem;

namespace vial::machine {
namespace {

using agent::FrameType;
using Socket = asio::local::stream_protocol::socket;

// Answers exec {"argv": [word...]} with stdout "<word>\n" per word and exit code = word count;
// argv ["hang"] never ends until killed. Notes the guest ids and kills it saw.
struct FakeGuest {
  std::shared_ptr<FrameConnection> conn;
  std::set<uint32_t> exec_ids;
  std::set<uint32_t> killed;
  int hellos = 0;

  asio::awaitable<void> serve() {
    try {
      for (;;) {
        auto item = co_await conn->read();
        if (!item.frame) continue;
        const agent::Frame& f = *item.frame;
        if (f.type == FrameType::hello) ++hellos;
        if (f.type == FrameType::kill) {
          killed.insert(f.request_id);
          conn->send(FrameType::exit, f.request_id, R"({"signal": 9})");
        }
        if (f.type == FrameType::stdin_) {  // "cat": stdin comes back as stdout, EOF ends it
          if (f.payload.empty()) {
            conn->send(FrameType::exit, f.request_id, R"({"exit_code": 0})");
          } else {
            conn->send(FrameType::stdout_, f.request_id, f.payload);
          }
        }
        if (f.type != FrameType::exec) continue;
        exec_ids.insert(f.request_id);
        auto request = agent::parse_body<agent::ExecRequest>(f.payload);
        if (request.argv == std::vector<std::string>{"hang"} || request.argv == std::vector<std::string>{"cat"}) continue;
        for (const auto& word : request.argv) conn->send(FrameType::stdout_, f.request_id, word + "\n");
        conn->send(FrameType::exit, f.request_id,
                   nlohmann::json{{"exit_code", request.argv.size()}}.dump());
      }
    } catch (const std::exception&) {
    }
  }
};

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vial-relay-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    Socket relay_side(ctx_), guest_side(ctx_);
    asio::local::connect_pair(relay_side, guest_side);
    guest_.conn = FrameConnection::create(std::move(guest_side));
    relay_ = AgentRelay::create(FrameConnection::create(std::move(relay_side)),
                                R"({"version": 1, "agent": "fake-guest"})");
    AgentRelay::Acceptor acceptor(ctx_, asio::local::stream_protocol::endpoint(socket_path().string()));
    asio::co_spawn(ctx_, relay_->accept_clients(std::move(acceptor)), asio::detached);
    asio::co_spawn(ctx_, relay_->run_guest(), [this](std::exception_ptr, std::string reason) {
      guest_lost_ = reason;
    });
    asio::co_spawn(ctx_, guest_.serve(), asio::detached);
  }
  void TearDown() override {
    relay_->close();
    ctx_.run_for(std::chrono::milliseconds(100));
    fs::remove_all(dir_);
  }
  fs::path socket_path() const { return dir_ / "agent.sock"; }

  asio::awaitable<std::shared_ptr<AgentClient>> client() {
    Socket socket(ctx_);
    co_await socket.async_connect({socket_path().string()}, asio::use_awaitable);
    auto c = AgentClient::create(std::move(socket));
    co_await c->hello();
    co_return c;
  }

  // Runs `test` on the io_context; fails if it takes more than 10 s.
  void run(std::function<asio::awaitable<void>()> test) {
    bool done = false;
    std::exception_ptr error;
    asio::co_spawn(ctx_, test(), [&](std::exception_ptr e) {
      error = e;
      done = true;
    });
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done && std::chrono::steady_clock::now() < until) ctx_.run_one_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(done) << "the test did not finish";
    if (error) std::rethrow_exception(error);
  }

  asio::io_context ctx_;
  fs::path dir_;
  FakeGuest guest_;
  std::shared_ptr<AgentRelay> relay_;
  std::string guest_lost_ = "(running)";
};

// Words as one string ("a b"), passed as a named value: GCC 12 miscompiles initializer lists
// and string literals bound to by-value parameters inside co_await.
asio::awaitable<std::pair<int, std::string>> run_words(AgentClient& c, std::string words) {
  agent::ExecRequest request;
  std::istringstream in(words);
  for (std::string w; in >> w;) request.argv.push_back(w);
  std::string out;
  ExecCallbacks cb;
  cb.on_stdout = [&out](std::string_view chunk) { out.append(chunk); };
  agent::ExecResult r = co_await c.exec(request, cb);
  co_return std::make_pair(r.exit_code.value_or(-1), out);
}

TEST_F(RelayTest, ClientsWithTheSameRequestIdsGetTheirOwnResults) {
  run([this]() -> asio::awaitable<void> {
    auto a = co_await client();
    auto b = co_await client();
    // Both clients number their requests from 1: the relay must keep them apart.
    std::string words1 = "alpha";
    auto ra = co_await run_words(*a, words1);
    std::string words2 = "beta gamma";
    auto rb = co_await run_words(*b, words2);
    std::string words3 = "x y z";
    auto ra2 = co_await run_words(*a, words3);
    EXPECT_EQ(ra, std::make_pair(1, std::string("alpha\n")));
    EXPECT_EQ(rb, std::make_pair(2, std::string("beta\ngamma\n")));
    EXPECT_EQ(ra2, std::make_pair(3, std::string("x\ny\nz\n")));
  });
  EXPECT_EQ(guest_.exec_ids.size(), 3u);  // three distinct ids on the guest channel
  EXPECT_EQ(guest_.hellos, 0);            // hello is answered by the relay
}

TEST_F(RelayTest, StdinReachesTheProgram) {
  run([this]() -> asio::awaitable<void> {
    auto c = co_await client();
    agent::ExecRequest cat;
    cat.argv = {"cat"};
    std::string out;
    ExecCallbacks cb;
    cb.on_stdout = [&out](std::string_view chunk) { out.append(chunk); };
    std::string big(200 * 1024, 'x');
    agent::ExecResult r = co_await c->exec(cat, cb, big);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(out, big);
  });
}

TEST_F(RelayTest, HelloCarriesTheGuestsIdentity) {
  run([this]() -> asio::awaitable<void> {
    Socket socket(ctx_);
    co_await socket.async_connect({socket_path().string()}, asio::use_awaitable);
    auto c = AgentClient::create(std::move(socket));
    agent::HelloBody hello = co_await c->hello();
    EXPECT_EQ(hello.agent, "fake-guest");
  });
}

TEST_F(RelayTest, ALeavingClientsProgramsAreKilled) {
  run([this]() -> asio::awaitable<void> {
    auto c = co_await client();
    agent::ExecRequest hang;
    hang.argv = {"hang"};
    asio::co_spawn(ctx_, c->exec(hang, {}), asio::detached);
    asio::steady_timer t(ctx_);
    while (guest_.exec_ids.empty()) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::use_awaitable);
    }
    c->close();
    while (guest_.killed.empty()) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::use_awaitable);
    }
    EXPECT_EQ(guest_.killed, guest_.exec_ids);
    // The relay still serves others.
    auto other = co_await client();
    std::string words4 = "still here";
    auto r = co_await run_words(*other, words4);
    EXPECT_EQ(r.first, 2);
  });
}

TEST_F(RelayTest, BadClientFramesGetErrorsNotCrashes) {
  run([this]() -> asio::awaitable<void> {
    Socket socket(ctx_);
    co_await socket.async_connect({socket_path().string()}, asio::use_awaitable);
    auto raw = FrameConnection::create(std::move(socket));
    raw->send(FrameType::stdin_, 77, "data for nobody");
    auto item = co_await raw->read();
    EXPECT_TRUE(item.frame && item.frame->type == FrameType::error && item.frame->request_id == 77);
    raw->send(FrameType::stdout_, 78, "clients don't send output");
    item = co_await raw->read();
    EXPECT_TRUE(item.frame && item.frame->type == FrameType::error && item.frame->request_id == 78);
  });
}

TEST_F(RelayTest, LosingTheGuestDisconnectsClients) {
  run([this]() -> asio::awaitable<void> {
    auto c = co_await client();
    guest_.conn->close();
    bool lost = false;
    try {
      std::string words5 = "never";
      co_await run_words(*c, words5);
    } catch (const AgentConnectionLost&) {
      lost = true;
    }
    EXPECT_TRUE(lost);
  });
  EXPECT_NE(guest_lost_, "(running)");
}

}  // namespace
}  // namespace vial::machine
