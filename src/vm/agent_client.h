// Host end of the agent protocol over the VM's virtio-serial socket (Asio coroutines).
// One reader dispatches frames to requests by id, so several execs can share a channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "agent/protocol.h"
#include "util/error.h"

namespace vial {

namespace asio = boost::asio;

struct ExecCallbacks {
  std::function<void(std::string_view)> on_stdout;
  std::function<void(std::string_view)> on_stderr;
};

// The channel to the guest broke (EOF or a socket error): usually the VM is going down.
class AgentConnectionLost final : public Error {
 public:
  explicit AgentConnectionLost(const std::string& reason)
      : Error(ErrorKind::internal, "agent connection lost" + (reason.empty() ? "" : ": " + reason)) {}
};

// A reseed for a restored guest: 64 bytes from the host's kernel RNG and the host's clock.
agent::ReseedBody fresh_reseed();

class AgentClient final : public std::enable_shared_from_this<AgentClient> {
 public:
  using Socket = asio::local::stream_protocol::socket;

  // Takes a connected socket and starts reading. Use via std::make_shared.
  static std::shared_ptr<AgentClient> create(Socket socket);

  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;
  ~AgentClient();

  // Opens the channel; returns the guest's hello. Throws Error on a version mismatch.
  asio::awaitable<agent::HelloBody> hello();
  asio::awaitable<void> ping();
  // After a snapshot restore: fresh entropy for the guest's kernel and interpreters, and the
  // right time. Clones of one template must never share random state.
  asio::awaitable<void> reseed();
  // Runs one program; output arrives through callbacks as it is produced. stdin_data, when
  // set, is sent and then closed. Cancel the awaitable to stop waiting (the guest keeps the
  // program until its own timeout: send kill() first if it must die now).
  asio::awaitable<agent::ExecResult> exec(const agent::ExecRequest& request, const ExecCallbacks& callbacks,
                                          std::optional<std::string> stdin_data = std::nullopt);

  // Network frames (agent::is_net_type) go to `hook` instead of to requests: the guest starts
  // streams and DNS queries itself (net/gateway.h). Set it before sending net_up.
  void set_net_hook(std::function<void(const agent::Frame&)> hook) { net_hook_ = std::move(hook); }
  // Sends a frame outside any request (the network gateway's frames).
  void send_frame(agent::FrameType type, uint32_t id, std::string_view payload) { send(type, id, payload); }
  // Turns the guest's network interception on (answered with ok, or an error naming what failed).
  asio::awaitable<void> net_up(const agent::NetUpBody& body);

  // Closes the socket; pending requests fail with "connection lost".
  void close();
  bool connected() const { return socket_.is_open() && !lost_; }
  asio::any_io_executor socket_executor() { return socket_.get_executor(); }

 private:
  using FrameChannel = asio::experimental::channel<void(boost::system::error_code, agent::Frame)>;
  class Pending;

  explicit AgentClient(Socket socket);
  void start();
  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  void send(agent::FrameType type, uint32_t id, std::string_view payload);
  // Registers a request and returns its frame channel (unregistered by Pending's destructor).
  Pending open_request();
  asio::awaitable<agent::Frame> receive(FrameChannel& channel);

  Socket socket_;
  std::map<uint32_t, std::shared_ptr<FrameChannel>> pending_;
  std::function<void(const agent::Frame&)> net_hook_;
  uint32_t next_id_ = 1;
  std::string outgoing_;
  bool writing_ = false;
  bool lost_ = false;
  std::string lost_reason_;
};

}  // namespace vial
