// Agent-protocol frames over one stream socket, at the frame level: the machine supervisor's
// relay speaks it on both sides (guest and clients), and streaming clients (`machine exec -i`,
// `machine shell`) use it where AgentClient's whole-request API can't stream stdin.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "agent/protocol.h"

namespace vial::machine {

namespace asio = boost::asio;

class FrameConnection final : public std::enable_shared_from_this<FrameConnection> {
 public:
  using Socket = asio::local::stream_protocol::socket;

  static std::shared_ptr<FrameConnection> create(Socket socket);
  FrameConnection(const FrameConnection&) = delete;
  FrameConnection& operator=(const FrameConnection&) = delete;

  // The next frame, or a frame the decoder dropped (unknown type, oversized). Throws
  // AgentConnectionLost at EOF or on a socket error. One reader at a time.
  asio::awaitable<agent::FrameDecoder::Item> read();
  // Queues a frame; a background writer sends the queue in order. Dropped once closed.
  void send(agent::FrameType type, uint32_t request_id, std::string_view payload);
  void close();
  bool is_open() const { return socket_.is_open() && !lost_; }

 private:
  explicit FrameConnection(Socket socket) : socket_(std::move(socket)) {}
  asio::awaitable<void> write_loop();

  Socket socket_;
  agent::FrameDecoder decoder_;
  std::string outgoing_;
  bool writing_ = false;
  bool lost_ = false;
};

}  // namespace vial::machine
