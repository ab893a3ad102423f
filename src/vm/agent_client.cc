#include "vm/agent_client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "util/error.h"

#include <sys/random.h>
#include <time.h>

namespace vial {

using agent::Frame;
using agent::FrameType;

// RAII registration of one request id.
class AgentClient::Pending {
 public:
  Pending(AgentClient& client, uint32_t id, std::shared_ptr<FrameChannel> channel)
      : client_(client), id(id), channel(std::move(channel)) {}
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
  ~Pending() {
    channel->close();  // unblocks a reader waiting to hand this request a frame
    client_.pending_.erase(id);
  }

 private:
  AgentClient& client_;

 public:
  const uint32_t id;
  const std::shared_ptr<FrameChannel> channel;
};

std::shared_ptr<AgentClient> AgentClient::create(Socket socket) {
  std::shared_ptr<AgentClient> client(new AgentClient(std::move(socket)));
  client->start();
  return client;
}

AgentClient::AgentClient(Socket socket) : socket_(std::move(socket)) {}

AgentClient::~AgentClient() { close(); }

void AgentClient::start() {
  asio::co_spawn(socket_.get_executor(), [self = shared_from_this()] { return self->read_loop(); },
                 asio::detached);
}

void AgentClient::close() {
  net_hook_ = nullptr;
  boost::system::error_code ec;
  socket_.close(ec);
  lost_ = true;
  for (auto& [id, ch] : pending_) ch->close();
}

asio::awaitable<void> AgentClient::read_loop() {
  agent::FrameDecoder decoder;
  std::string buf(64 * 1024, '\0');
  try {
    for (;;) {
      size_t n = co_await socket_.async_read_some(asio::buffer(buf), asio::use_awaitable);
      decoder.feed(std::string_view(buf.data(), n));
      while (auto item = decoder.next()) {
        if (!item->frame) continue;  // a frame we can't decode is the guest's bug; skip it
        if (agent::is_net_type(item->frame->type)) {
          if (net_hook_) net_hook_(*item->frame);
          continue;
        }
        auto it = pending_.find(item->frame->request_id);
        if (it == pending_.end()) continue;  // a late frame for a request nobody waits for
        auto channel = it->second;
        // Awaiting the send gives backpressure: a slow consumer stops the reader.
        // A closed channel (its request gave up) just drops the frame.
        co_await channel->async_send({}, std::move(*item->frame), asio::as_tuple(asio::use_awaitable));
      }
    }
  } catch (const boost::system::system_error& e) {
    lost_reason_ = e.code() == asio::error::eof ? "the guest closed the channel" : e.code().message();
  }
  lost_ = true;
  for (auto& [id, ch] : pending_) ch->close();
}

void AgentClient::send(FrameType type, uint32_t id, std::string_view payload) {
  agent::append_frame(outgoing_, type, id, payload);
  if (!writing_) {
    writing_ = true;
    asio::co_spawn(socket_.get_executor(), [self = shared_from_this()] { return self->write_loop(); },
                   asio::detached);
  }
}

asio::awaitable<void> AgentClient::write_loop() {
  try {
    while (!outgoing_.empty()) {
      std::string chunk = std::move(outgoing_);
      outgoing_.clear();
      co_await asio::async_write(socket_, asio::buffer(chunk), asio::use_awaitable);
    }
  } catch (const boost::system::system_error& e) {
    lost_ = true;
    lost_reason_ = e.code().message();
    outgoing_.clear();
  }
  writing_ = false;
}

AgentClient::Pending AgentClient::open_request() {
  if (lost_) {
    throw AgentConnectionLost(lost_reason_);
  }
  uint32_t id = next_id_++;
  auto channel = std::make_shared<FrameChannel>(socket_.get_executor(), 64);
  pending_[id] = channel;
  return Pending(*this, id, channel);
}

asio::awaitable<Frame> AgentClient::receive(FrameChannel& channel) {
  auto [ec, frame] = co_await channel.async_receive(asio::as_tuple(asio::use_awaitable));
  if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
  if (ec) {
    throw AgentConnectionLost(lost_reason_);
  }
  if (frame.type == FrameType::error) {
    auto body = agent::parse_body<agent::ErrorBody>(frame.payload);
    // spawn_failed is the request's fault as good as always: a cwd that does not exist or is
    // not the sandbox user's, a program not in PATH.
    ErrorKind kind = body.code == "bad_request" || body.code == "spawn_failed" ? ErrorKind::invalid_input
                     : body.code == "busy"                                     ? ErrorKind::conflict
                                                                               : ErrorKind::internal;
    throw Error(kind, "guest agent: " + body.message);
  }
  co_return frame;
}

asio::awaitable<agent::HelloBody> AgentClient::hello() {
  Pending req = open_request();
  nlohmann::json body = agent::HelloBody{};
  send(FrameType::hello, req.id, body.dump());
  Frame reply = co_await receive(*req.channel);
  auto hello = agent::parse_body<agent::HelloBody>(reply.payload);
  if (hello.version != agent::kProtocolVersion) {
    throw Error(ErrorKind::unavailable, "guest agent speaks protocol " + std::to_string(hello.version) +
                                            ", vial speaks " + std::to_string(agent::kProtocolVersion) +
                                            ": rebuild the image with `vial image build --force`");
  }
  co_return hello;
}

asio::awaitable<void> AgentClient::ping() {
  Pending req = open_request();
  send(FrameType::ping, req.id, {});
  co_await receive(*req.channel);
}

agent::ReseedBody fresh_reseed() {
  agent::ReseedBody body;
  body.entropy.resize(agent::kReseedEntropyBytes);
  if (::getrandom(body.entropy.data(), body.entropy.size(), 0) != static_cast<ssize_t>(body.entropy.size())) {
    throw_errno("getrandom", errno);
  }
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  body.realtime_ns = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  return body;
}

asio::awaitable<void> AgentClient::reseed() {
  Pending req = open_request();
  send(FrameType::reseed, req.id, nlohmann::json(fresh_reseed()).dump());
  co_await receive(*req.channel);
}

asio::awaitable<void> AgentClient::net_up(const agent::NetUpBody& body) {
  Pending req = open_request();
  send(FrameType::net_up, req.id, nlohmann::json(body).dump());
  co_await receive(*req.channel);
}

asio::awaitable<agent::ExecResult> AgentClient::exec(const agent::ExecRequest& request,
                                                     const ExecCallbacks& callbacks,
                                                     std::optional<std::string> stdin_data) {
  Pending req = open_request();
  agent::ExecRequest sent = request;
  sent.stdin_open = stdin_data.has_value();
  send(FrameType::exec, req.id, nlohmann::json(sent).dump());
  if (stdin_data) {
    std::string_view rest = *stdin_data;
    while (!rest.empty()) {
      size_t n = std::min(rest.size(), agent::kChunkSize);
      send(FrameType::stdin_, req.id, rest.substr(0, n));
      rest.remove_prefix(n);
    }
    send(FrameType::stdin_, req.id, {});
  }
  for (;;) {
    Frame frame = co_await receive(*req.channel);
    switch (frame.type) {
      case FrameType::stdout_:
        if (callbacks.on_stdout) callbacks.on_stdout(frame.payload);
        break;
      case FrameType::stderr_:
        if (callbacks.on_stderr) callbacks.on_stderr(frame.payload);
        break;
      case FrameType::exit:
        co_return agent::parse_body<agent::ExecResult>(frame.payload);
      default:
        break;
    }
  }
}

}  // namespace vial
