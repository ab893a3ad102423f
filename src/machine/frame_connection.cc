#include "machine/frame_connection.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "vm/agent_client.h"

namespace vial::machine {

std::shared_ptr<FrameConnection> FrameConnection::create(Socket socket) {
  return std::shared_ptr<FrameConnection>(new FrameConnection(std::move(socket)));
}

asio::awaitable<agent::FrameDecoder::Item> FrameConnection::read() {
  std::string buf(64 * 1024, '\0');
  for (;;) {
    if (auto item = decoder_.next()) co_return std::move(*item);
    try {
      size_t n = co_await socket_.async_read_some(asio::buffer(buf), asio::use_awaitable);
      decoder_.feed(std::string_view(buf.data(), n));
    } catch (const boost::system::system_error& e) {
      lost_ = true;
      throw AgentConnectionLost(e.code() == asio::error::eof ? "the other side closed the connection"
                                                             : e.code().message());
    }
  }
}

void FrameConnection::send(agent::FrameType type, uint32_t request_id, std::string_view payload) {
  if (!is_open()) return;
  agent::append_frame(outgoing_, type, request_id, payload);
  if (!writing_) {
    writing_ = true;
    asio::co_spawn(socket_.get_executor(), [self = shared_from_this()] { return self->write_loop(); },
                   asio::detached);
  }
}

asio::awaitable<void> FrameConnection::write_loop() {
  try {
    while (!outgoing_.empty()) {
      std::string chunk = std::move(outgoing_);
      outgoing_.clear();
      co_await asio::async_write(socket_, asio::buffer(chunk), asio::use_awaitable);
    }
  } catch (const boost::system::system_error&) {
    lost_ = true;  // the reader sees the same failure and reports it
    outgoing_.clear();
  }
  writing_ = false;
}

void FrameConnection::close() {
  lost_ = true;
  outgoing_.clear();
  boost::system::error_code ec;
  socket_.close(ec);
}

}  // namespace vial::machine
