#include "qmp/qmp_client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

using nlohmann::json;
using namespace boost::asio::experimental::awaitable_operators;

namespace vial {
namespace {

// Events nobody has consumed yet that a waiter keeps; more of the same are dropped.
constexpr size_t kWatchBacklog = 16;

}  // namespace

asio::awaitable<std::shared_ptr<QmpClient>> QmpClient::connect(std::filesystem::path socket_path,
                                                               std::chrono::milliseconds deadline) {
  Socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect({socket_path.string()}, asio::use_awaitable);
  co_return co_await attach(std::move(socket), deadline);
}

asio::awaitable<std::shared_ptr<QmpClient>> QmpClient::attach(Socket socket, std::chrono::milliseconds deadline) {
  auto ex = socket.get_executor();
  std::shared_ptr<QmpClient> client(new QmpClient(std::move(socket)));
  client->greeting_ = co_await client->read_message();
  if (!client->greeting_.contains("QMP")) {
    throw Error(ErrorKind::internal, "QMP: expected a greeting, got " + client->greeting_.dump());
  }
  asio::co_spawn(ex, [client] { return client->read_loop(); }, asio::detached);
  co_await client->execute("qmp_capabilities", nullptr, deadline);
  co_return client;
}

QmpClient::QmpClient(Socket socket) : socket_(std::move(socket)) {}

QmpClient::~QmpClient() { close(); }

void QmpClient::close() { abandon("closed"); }

void QmpClient::abandon(const std::string& reason) {
  boost::system::error_code ec;
  socket_.close(ec);
  fail_all(reason);
}

void QmpClient::fail_all(const std::string& reason) {
  if (!lost_) lost_reason_ = reason;
  lost_ = true;
  for (auto& [id, ch] : pending_) ch->close();
  for (auto& w : watches_) w.channel->close();
}

// QMP messages are single-line JSON objects terminated by CRLF.
asio::awaitable<json> QmpClient::read_message() {
  size_t n = co_await asio::async_read_until(socket_, asio::dynamic_buffer(inbuf_), '\n', asio::use_awaitable);
  json message = json::parse(inbuf_.begin(), inbuf_.begin() + static_cast<std::ptrdiff_t>(n));
  inbuf_.erase(0, n);
  co_return message;
}

asio::awaitable<void> QmpClient::read_loop() {
  auto self = shared_from_this();  // a close() from a destructor must not free us mid-read
  try {
    for (;;) dispatch(co_await read_message());
  } catch (const boost::system::system_error& e) {
    fail_all(e.code() == asio::error::eof ? "QEMU closed the QMP socket" : e.code().message());
  } catch (const json::exception& e) {
    abandon(std::string("malformed QMP message: ") + e.what());
  }
}

void QmpClient::dispatch(json message) {
  if (message.contains("event")) {
    const json data = message.value("data", json::object());
    const std::string name = message["event"].get<std::string>();
    for (auto& w : watches_) {
      if (w.event == name && (!w.filter || w.filter(data))) w.channel->try_send(boost::system::error_code{}, data);
    }
    return;
  }
  if (!message.contains("id") || !message["id"].is_string()) {
    // We always send an id, so an error without one means QEMU could not parse what it read:
    // the stream is torn and no pending command will get its answer. Fail them all now.
    if (message.contains("error")) {
      abandon("QEMU could not parse a command: " + message["error"].value("desc", message.dump()));
    }
    return;
  }
  auto it = pending_.find(message["id"].get<std::string>());
  if (it == pending_.end()) return;  // its command gave up (deadline)
  it->second->try_send(boost::system::error_code{}, std::move(message));
}

asio::awaitable<void> QmpClient::write_loop() {
  auto self = shared_from_this();
  try {
    while (!outgoing_.empty()) {
      std::string chunk = std::move(outgoing_);
      outgoing_.clear();
      co_await asio::async_write(socket_, asio::buffer(chunk), asio::use_awaitable);
    }
  } catch (const boost::system::system_error& e) {
    outgoing_.clear();
    fail_all(e.code().message());
  }
  writing_ = false;
}

asio::awaitable<json> QmpClient::receive(JsonChannel& channel, std::chrono::milliseconds deadline,
                                         const std::string& what) {
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  auto outcome = co_await (channel.async_receive(asio::as_tuple(asio::use_awaitable)) ||
                           timer.async_wait(asio::as_tuple(asio::use_awaitable)));
  if (outcome.index() == 1) {
    throw Error(ErrorKind::timeout, "QMP: no answer to " + what + " within " + std::to_string(deadline.count()) +
                                        " ms");
  }
  auto [ec, value] = std::get<0>(std::move(outcome));
  if (ec) throw Error(ErrorKind::internal, "QMP connection lost (" + lost_reason_ + ") waiting for " + what);
  co_return value;
}

asio::awaitable<json> QmpClient::execute(std::string command, json arguments, std::chrono::milliseconds deadline) {
  if (lost_) throw Error(ErrorKind::internal, "QMP connection lost (" + lost_reason_ + ") before " + command);
  const std::string id = "vial-" + std::to_string(next_id_++);
  json request = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) request["arguments"] = std::move(arguments);
  auto channel = std::make_shared<JsonChannel>(socket_.get_executor(), 1);
  pending_[id] = channel;
  struct Unregister {
    QmpClient& c;
    const std::string& id;
    ~Unregister() { c.pending_.erase(id); }
  } unregister{*this, id};

  outgoing_ += request.dump() + "\n";
  if (!writing_) {
    writing_ = true;
    asio::co_spawn(socket_.get_executor(), [self = shared_from_this()] { return self->write_loop(); },
                   asio::detached);
  }
  json reply = co_await receive(*channel, deadline, command);
  if (reply.contains("error")) {
    const json& err = reply["error"];
    throw QmpError(err.value("class", ""), err.value("desc", "QMP command " + command + " failed"));
  }
  co_return reply.value("return", json::object());
}

std::shared_ptr<QmpClient::EventWaiter> QmpClient::watch_event(std::string event, EventFilter filter) {
  auto channel = std::make_shared<JsonChannel>(socket_.get_executor(), kWatchBacklog);
  if (lost_) channel->close();
  watches_.push_back({std::move(event), std::move(filter), std::move(channel)});
  return std::make_shared<EventWaiter>(weak_from_this(), std::prev(watches_.end()));
}

asio::awaitable<json> QmpClient::wait_event(std::string event, EventFilter filter,
                                            std::chrono::milliseconds deadline) {
  auto waiter = watch_event(std::move(event), std::move(filter));
  co_return co_await waiter->wait(deadline);
}

QmpClient::EventWaiter::~EventWaiter() {
  if (auto client = client_.lock()) client->watches_.erase(it_);
}

asio::awaitable<json> QmpClient::EventWaiter::wait(std::chrono::milliseconds deadline) {
  auto client = client_.lock();
  if (!client) throw Error(ErrorKind::internal, "QMP connection closed while waiting for " + it_->event);
  co_return co_await client->receive(*it_->channel, deadline, "event " + it_->event);
}

}  // namespace vial
