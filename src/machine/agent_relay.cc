#include "machine/agent_relay.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "vm/agent_client.h"

namespace vial::machine {

using agent::Frame;
using agent::FrameType;

namespace {

void send_error(FrameConnection& conn, uint32_t id, const std::string& code, const std::string& message) {
  conn.send(FrameType::error, id, nlohmann::json(agent::ErrorBody{code, message}).dump());
}

// The guest's last frame about a request: the route can go.
bool ends_request(FrameType type) {
  return type == FrameType::exit || type == FrameType::error || type == FrameType::pong ||
         type == FrameType::ok || type == FrameType::hello;
}

}  // namespace

std::shared_ptr<AgentRelay> AgentRelay::create(std::shared_ptr<FrameConnection> guest, std::string guest_hello) {
  return std::shared_ptr<AgentRelay>(new AgentRelay(std::move(guest), std::move(guest_hello)));
}

asio::awaitable<void> AgentRelay::accept_clients(Acceptor acceptor) {
  acceptor_ = std::make_unique<Acceptor>(std::move(acceptor));
  auto self = shared_from_this();
  while (acceptor_->is_open()) {
    FrameConnection::Socket socket(acceptor_->get_executor());
    boost::system::error_code ec;
    co_await acceptor_->async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor_->is_open()) break;
    if (ec) continue;  // e.g. EMFILE: the client sees its connection fail; keep serving others
    auto client = std::make_shared<Client>();
    client->conn = FrameConnection::create(std::move(socket));
    clients_.insert(client);
    asio::co_spawn(acceptor_->get_executor(), [self, client] { return self->serve_client(client); },
                   asio::detached);
  }
}

asio::awaitable<void> AgentRelay::serve_client(std::shared_ptr<Client> client) {
  auto self = shared_from_this();  // the relay outlives every client it serves
  try {
    for (;;) {
      auto item = co_await client->conn->read();
      if (item.error) {
        send_error(*client->conn, item.error->request_id, "bad_frame", item.error->message);
      } else {
        from_client(client, std::move(*item.frame));
      }
    }
  } catch (const std::exception&) {
    // The client left (or broke the stream): its requests end with it.
  }
  client_gone(*client);
  clients_.erase(client);
}

void AgentRelay::from_client(const std::shared_ptr<Client>& client, Frame frame) {
  FrameConnection& conn = *client->conn;
  switch (frame.type) {
    case FrameType::hello:
      conn.send(FrameType::hello, frame.request_id, guest_hello_);
      return;
    case FrameType::exec:
    case FrameType::ping:
    case FrameType::reseed: {
      if (client->guest_ids.contains(frame.request_id)) {
        send_error(conn, frame.request_id, "bad_request", "request id already in use");
        return;
      }
      uint32_t guest_id = next_guest_id_++;
      client->guest_ids[frame.request_id] = guest_id;
      routes_[guest_id] = Route{client, frame.request_id};
      guest_->send(frame.type, guest_id, frame.payload);
      return;
    }
    case FrameType::stdin_:
    case FrameType::kill: {
      auto it = client->guest_ids.find(frame.request_id);
      if (it == client->guest_ids.end()) {
        send_error(conn, frame.request_id, "unknown_request", "no running request with this id");
        return;
      }
      guest_->send(frame.type, it->second, frame.payload);
      return;
    }
    default:
      send_error(conn, frame.request_id, "bad_frame",
                 "a client may not send " + std::string(agent::type_name(frame.type)) + " frames");
  }
}

asio::awaitable<std::string> AgentRelay::run_guest() {
  auto self = shared_from_this();
  std::string reason;
  try {
    for (;;) {
      auto item = co_await guest_->read();
      if (item.frame) from_guest(std::move(*item.frame));  // a frame the decoder dropped is the guest's bug
    }
  } catch (const std::exception& e) {
    reason = e.what();
  }
  close();
  co_return reason;
}

void AgentRelay::from_guest(Frame frame) {
  if (agent::is_net_type(frame.type)) {
    if (net_handler_) net_handler_(frame);
    return;
  }
  auto it = routes_.find(frame.request_id);
  if (it == routes_.end()) return;  // a request nobody waits for any more
  auto client = it->second.client.lock();
  const uint32_t client_id = it->second.client_id;
  if (ends_request(frame.type)) {
    routes_.erase(it);
    if (client) client->guest_ids.erase(client_id);
  }
  if (client) client->conn->send(frame.type, client_id, frame.payload);
}

void AgentRelay::client_gone(Client& client) {
  // Like a closed ssh session: what the client started dies with it. The routes stay until
  // the guest's exit frames arrive, which are then dropped.
  const std::string kill_body = R"({"signal":9})";
  for (const auto& [client_id, guest_id] : client.guest_ids) guest_->send(FrameType::kill, guest_id, kill_body);
  client.guest_ids.clear();
  client.conn->close();
}

void AgentRelay::close() {
  net_handler_ = nullptr;
  if (acceptor_) {
    boost::system::error_code ec;
    acceptor_->close(ec);
  }
  guest_->close();
  for (const auto& client : clients_) client->conn->close();
}

}  // namespace vial::machine
