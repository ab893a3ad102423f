#include "machine/exec_client.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "machine/frame_connection.h"
#include "sandbox/runner.h"
#include "util/error.h"

namespace vial::machine {
namespace {

using agent::FrameType;

constexpr uint32_t kHelloId = 1;
constexpr uint32_t kExecId = 2;

void write_out(FILE* stream, std::string_view data) {
  std::fwrite(data.data(), 1, data.size(), stream);
  std::fflush(stream);
}

// Reads stdin on its own thread (a terminal, pipe or file: not all of them can be polled)
// and hands each chunk to the io_context; an empty frame closes the program's stdin.
void pump_stdin(std::shared_ptr<asio::io_context> ctx, std::shared_ptr<FrameConnection> conn) {
  std::thread([ctx, conn] {
    std::string buf(agent::kChunkSize, '\0');
    for (;;) {
      ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      std::string chunk = n > 0 ? buf.substr(0, static_cast<size_t>(n)) : std::string();
      asio::post(*ctx, [conn, chunk] { conn->send(FrameType::stdin_, kExecId, chunk); });
      if (n <= 0) return;
    }
  }).detach();
}

asio::awaitable<int> run(std::shared_ptr<asio::io_context> ctx, std::filesystem::path socket_path,
                         agent::ExecRequest request, bool forward_stdin) {
  FrameConnection::Socket socket(ctx->get_executor());
  boost::system::error_code ec;
  socket.connect({socket_path.string()}, ec);
  if (ec) {
    throw Error(ErrorKind::unavailable, "cannot reach the machine at " + socket_path.string() + ": " + ec.message());
  }
  auto conn = FrameConnection::create(std::move(socket));
  conn->send(FrameType::hello, kHelloId, nlohmann::json(agent::HelloBody{}).dump());
  request.stdin_open = forward_stdin;
  conn->send(FrameType::exec, kExecId, nlohmann::json(request).dump());
  if (forward_stdin) pump_stdin(ctx, conn);
  for (;;) {
    auto item = co_await conn->read();
    if (!item.frame || item.frame->request_id != kExecId) continue;
    const agent::Frame& frame = *item.frame;
    switch (frame.type) {
      case FrameType::stdout_: write_out(stdout, frame.payload); break;
      case FrameType::stderr_: write_out(stderr, frame.payload); break;
      case FrameType::error: {
        auto body = agent::parse_body<agent::ErrorBody>(frame.payload);
        throw Error(body.code == "bad_request" || body.code == "spawn_failed" ? ErrorKind::invalid_input
                                                                                : ErrorKind::internal,
                    "guest agent: " + body.message);
      }
      case FrameType::exit: {
        auto result = agent::parse_body<agent::ExecResult>(frame.payload);
        if (result.timed_out) co_return kTimeoutExitCode;
        if (result.signal) co_return 128 + *result.signal;
        co_return result.exit_code.value_or(1);
      }
      default: break;
    }
  }
}

}  // namespace

int stream_exec(const std::filesystem::path& relay_socket, agent::ExecRequest request, bool forward_stdin) {
  // Shared with the stdin thread, which may still be blocked in read() when the program ends.
  auto ctx = std::make_shared<asio::io_context>();
  int code = 1;
  std::exception_ptr error;
  asio::co_spawn(*ctx, run(ctx, relay_socket, std::move(request), forward_stdin),
                 [&](std::exception_ptr e, int c) {
                   error = e;
                   code = c;
                 });
  ctx->run();
  if (error) std::rethrow_exception(error);
  return code;
}

}  // namespace vial::machine
