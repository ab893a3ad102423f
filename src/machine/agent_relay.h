// The machine supervisor's relay: one agent channel to the guest, shared by any number of
// clients connecting to machines/<name>/agent.sock. Each client speaks the plain agent
// protocol (so AgentClient works unchanged) with its own request ids; the relay maps them
// to ids unique on the guest channel and back, answers `hello` itself with the guest's
// hello, and kills a client's running programs when the client goes away.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "machine/frame_connection.h"

namespace vial::machine {

class AgentRelay final : public std::enable_shared_from_this<AgentRelay> {
 public:
  using Acceptor = asio::local::stream_protocol::acceptor;

  // `guest` has completed hello; `guest_hello` is the payload of the guest's reply.
  static std::shared_ptr<AgentRelay> create(std::shared_ptr<FrameConnection> guest, std::string guest_hello);
  AgentRelay(const AgentRelay&) = delete;
  AgentRelay& operator=(const AgentRelay&) = delete;

  // Serves every client `acceptor` accepts until close().
  asio::awaitable<void> accept_clients(Acceptor acceptor);
  // Forwards the guest's frames to their clients until the guest channel ends (QEMU exited,
  // or close()); then disconnects every client. Returns why the channel ended.
  asio::awaitable<std::string> run_guest();
  // Stops accepting and drops every connection.
  void close();
  // The guest's network frames (agent::is_net_type) go to `handler` (the machine's gateway).
  void set_net_handler(std::function<void(const agent::Frame&)> handler) { net_handler_ = std::move(handler); }

 private:
  struct Client {
    std::shared_ptr<FrameConnection> conn;
    std::map<uint32_t, uint32_t> guest_ids;  // the client's request id -> the guest channel's
  };
  struct Route {
    std::weak_ptr<Client> client;
    uint32_t client_id = 0;
  };

  AgentRelay(std::shared_ptr<FrameConnection> guest, std::string guest_hello)
      : guest_(std::move(guest)), guest_hello_(std::move(guest_hello)) {}
  asio::awaitable<void> serve_client(std::shared_ptr<Client> client);
  void from_client(const std::shared_ptr<Client>& client, agent::Frame frame);
  void from_guest(agent::Frame frame);
  void client_gone(Client& client);

  std::shared_ptr<FrameConnection> guest_;
  std::string guest_hello_;
  std::unique_ptr<Acceptor> acceptor_;
  std::set<std::shared_ptr<Client>> clients_;
  std::map<uint32_t, Route> routes_;  // by guest request id
  uint32_t next_guest_id_ = 1;
  std::function<void(const agent::Frame&)> net_handler_;
};

}  // namespace vial::machine
