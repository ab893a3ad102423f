#include "server/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>

#include <condition_variable>
#include <sstream>
#include <functional>
#include <mutex>
#include <thread>
#include <limits>
#include <set>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "server/connections.h"
#include "server/log.h"
#include "util/paths.h"
#include "util/user_file.h"

namespace vial::server {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr auto kLingerTime = std::chrono::seconds(5);
constexpr std::uint64_t kLingerBytes = 256ull << 20;
constexpr auto kShutdownWatchdog = std::chrono::seconds(15);
// A request header must arrive whole within this (an idle keep-alive connection too).
constexpr auto kHeaderTimeout = std::chrono::seconds(10);
// accept() failing for lack of fds or memory is retried after a pause that doubles up to this.
constexpr auto kMaxAcceptBackoff = std::chrono::milliseconds(1000);

bool same_token(std::string_view a, std::string_view b) {
  // Constant time in the content, so the comparison leaks nothing but the length.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

std::pair<std::string, unsigned short> parse_listen(const std::string& spec) {
  size_t colon = spec.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw Error(ErrorKind::invalid_input, "--listen expects HOST:PORT (e.g. 127.0.0.1:8080), got '" + spec + "'");
  }
  std::string host = spec.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port = spec.substr(colon + 1);
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 1 || p > 65535) {
    throw Error(ErrorKind::invalid_input, "--listen: '" + port + "' is not a port number (1-65535)");
  }
  return {host, static_cast<unsigned short>(p)};
}

class Server final {
 public:
  Server(asio::io_context& ctx, const ServerOptions& options, std::shared_ptr<VmManager> manager)
      : ctx_(ctx), options_(options), manager_(std::move(manager)), api_(manager_, options.api),
        unix_acceptor_(ctx), tcp_acceptor_(ctx), connections_(connection_cap(open_file_limit())) {}

  void open_unix(const fs::path& path) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (fs::exists(fs::symlink_status(path))) {
      asio::local::stream_protocol::socket probe(ctx_);
      boost::system::error_code cec;
      probe.connect(asio::local::stream_protocol::endpoint(path.string()), cec);
      if (!cec) {
        throw Error(ErrorKind::conflict, "another vial server is listening on " + path.string() +
                                             "; stop it first or pick another --socket");
      }
      fs::remove(path, ec);  // stale: its server died without removing it
    }
    unix_acceptor_.open();
    boost::system::error_code bec;
    unix_acceptor_.bind(asio::local::stream_protocol::endpoint(path.string()), bec);
    if (bec) throw Error(ErrorKind::unavailable, "cannot create socket " + path.string() + ": " + bec.message());
    ::chmod(path.c_str(), 0600);  // before listen(): nobody can connect in between
    unix_acceptor_.listen();
    socket_path_ = path;
    log(spdlog::level::info, "listening", {{"socket", path.string()}});
  }

  void open_tcp(const std::string& spec, std::string token) {
    auto [host, port] = parse_listen(spec);
    boost::system::error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec) throw Error(ErrorKind::invalid_input, "--listen: '" + host + "' is not an IP address");
    if (token.empty()) {
      throw Error(ErrorKind::invalid_input, "--listen needs --token-file: TCP clients must send a bearer token "
                                            "(create one with: head -c 32 /dev/urandom | base64 > token; chmod 600 token)");
    }
    token_ = std::move(token);
    asio::ip::tcp::endpoint endpoint(address, port);
    tcp_acceptor_.open(endpoint.protocol());
    tcp_acceptor_.set_option(asio::socket_base::reuse_address(true));
    tcp_acceptor_.bind(endpoint, ec);
    if (ec == boost::system::errc::address_in_use) {
      throw Error(ErrorKind::unavailable, "port " + std::to_string(port) + " on " + host +
                                              " is busy (another server?); pick another with --listen");
    }
    if (ec) throw Error(ErrorKind::unavailable, "cannot listen on " + spec + ": " + ec.message());
    tcp_acceptor_.listen();
    log(spdlog::level::info, "listening", {{"tcp", spec}, {"auth", "bearer"}});
  }

  void start() {
    asio::co_spawn(ctx_, shutdown_on_signal(), asio::detached);
    asio::co_spawn(ctx_, api_.sessions().reap_loop(), asio::detached);
    if (unix_acceptor_.is_open()) asio::co_spawn(ctx_, accept_loop(unix_acceptor_, false), asio::detached);
    if (tcp_acceptor_.is_open()) asio::co_spawn(ctx_, accept_loop(tcp_acceptor_, true), asio::detached);
  }

  bool drained() const { return drained_; }
  void on_drained(std::function<void()> f) { on_drained_ = std::move(f); }
  void remove_socket() {
    std::error_code ec;
    if (!socket_path_.empty()) fs::remove(socket_path_, ec);
  }

 private:
  template <typename Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, bool tcp) {
    auto backoff = std::chrono::milliseconds(0);
    asio::steady_timer pause(ctx_);
    while (acceptor.is_open()) {
      boost::system::error_code ec;
      auto s = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;  // closed at shutdown
      if (ec) {
        // EMFILE, ENFILE, ENOBUFS...: the server must go on accepting once fds are free again.
        backoff = std::min(kMaxAcceptBackoff, std::max(backoff * 2, std::chrono::milliseconds(50)));
        log(spdlog::level::warn, "accept failed; retrying",
            {{"error", ec.message()}, {"retry_ms", backoff.count()}, {"connections", connections_.size()}});
        pause.expires_after(backoff);
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        continue;
      }
      backoff = std::chrono::milliseconds(0);
      int family = AF_UNIX, protocol = 0;
      if (tcp) {
        s.set_option(asio::ip::tcp::no_delay(true), ec);
        family = s.local_endpoint(ec).protocol().family();
        protocol = IPPROTO_TCP;
      }
      adopt(s.release(), family, protocol, tcp);
    }
  }

  void adopt(int fd, int family, int protocol, bool tcp) {
    auto socket = std::make_shared<Socket>(ctx_, asio::generic::stream_protocol(family, protocol), fd);
    if (!connections_.admit(socket)) {
      log(spdlog::level::warn, "connection refused: every connection is busy", {{"cap", connections_.cap()}});
      boost::system::error_code ec;
      socket->close(ec);
      return;
    }
    asio::co_spawn(ctx_, connection(socket, tcp), asio::detached);
  }

  void check_auth(const Request& req) const {
    auto it = req.find(http::field::authorization);
    if (it == req.end()) {
      throw HttpError(http::status::unauthorized, "unauthorized",
                      "this endpoint needs 'Authorization: Bearer TOKEN' (the server's --token-file)");
    }
    std::string_view value = it->value();
    if (!value.starts_with("Bearer ") || !same_token(value.substr(7), token_)) {
      throw HttpError(http::status::forbidden, "forbidden", "the bearer token is wrong");
    }
  }

  asio::awaitable<void> connection(std::shared_ptr<Socket> socket, bool tcp) {
    boost::beast::flat_buffer buffer;
    try {
      while (!draining_ || active_ == 0) {
        if (!co_await serve_one(*socket, buffer, tcp)) break;
        if (draining_) break;
      }
    } catch (const std::exception& e) {
      log(spdlog::level::debug, "connection ended", {{"reason", e.what()}});
    }
    boost::system::error_code ec;
    socket->shutdown(Socket::shutdown_both, ec);
    socket->close(ec);
    connections_.remove(socket);
  }

  // Reads and answers one request; false when the connection must close.
  asio::awaitable<bool> serve_one(Socket& socket, boost::beast::flat_buffer& buffer, bool tcp) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    // Beast checks Content-Length against the limit in force when the header is parsed, and
    // the limit depends on the route: no limit for the header, the route's before the body.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    boost::system::error_code ec;
    connections_.set_waiting(socket, true);
    {
      // A half-sent header must not hold the connection (and its fd) for ever.
      asio::steady_timer deadline(ctx_, kHeaderTimeout);
      deadline.async_wait([&socket](boost::system::error_code e) {
        if (!e) socket.cancel(e);
      });
      co_await http::async_read_header(socket, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    }
    connections_.set_waiting(socket, false);
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::operation_aborted ||
        ec == asio::error::bad_descriptor || ec == asio::error::connection_reset) {
      co_return false;
    }
    const auto start = Clock::now();
    Request request;
    request.version(11);
    request.keep_alive(false);
    std::string target;
    Router::Match match;
    std::uint64_t body_limit = options_.api.max_json_bytes;
    // The token is checked on the header, before any body is read (or its size judged): an
    // unauthenticated client gets its refusal without the server buffering what it sends.
    std::exception_ptr refused;
    if (!ec) {
      target = std::string(parser.get().target());
      std::string path = target.substr(0, target.find('?'));
      match = api_.router().match(parser.get().method_string(), path);
      if (tcp && match.route && match.route->needs_auth) {
        try {
          check_auth(parser.get());
        } catch (...) {
          refused = std::current_exception();
        }
      }
      if (match.route && match.route->body_limit) body_limit = match.route->body_limit;
      parser.body_limit(body_limit);  // chunked bodies are counted as they arrive
      if (!refused && parser.content_length() && *parser.content_length() > body_limit) ec = http::error::body_limit;
    }
    if (!ec && !refused) {
      if (parser.get()[http::field::expect] == "100-continue") {
        static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        co_await asio::async_write(socket, asio::buffer(kContinue), asio::use_awaitable);
      }
      co_await http::async_read(socket, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!ec) request = parser.release();
    ++active_;
    struct Done {
      unsigned& n;
      ~Done() { --n; }
    } done{active_};
    Exchange ex(socket, request, match.params);
    std::optional<ErrorReply> failure;
    try {
      if (ec == http::error::body_limit) {
        throw Error(ErrorKind::too_large, "the request body is larger than this endpoint's limit of " +
                                              std::to_string(body_limit) + " bytes");
      }
      if (ec) throw HttpError(http::status::bad_request, "bad_request", "malformed HTTP request: " + ec.message());
      if (refused) std::rethrow_exception(refused);
      if (!match.route) {
        if (match.allowed.empty()) throw Error(ErrorKind::not_found, "no such endpoint: " + target + " (see docs/api.md)");
        std::string allowed;
        for (const auto& m : match.allowed) allowed += (allowed.empty() ? "" : ", ") + m;
        throw HttpError(http::status::method_not_allowed, "method_not_allowed",
                        std::string(request.method_string()) + " is not allowed here; use " + allowed);
      }
      co_await match.route->handler(ex);
    } catch (const ClientGone&) {
      log(spdlog::level::info, "client hung up; its work was cancelled", {{"target", target}});
      co_return false;
    } catch (const std::exception& e) {
      failure = error_reply(e);
    }
    if (failure) {
      api_.metrics().error(failure->code);
      if (ex.responded() && !ex.streaming()) co_return false;  // mid-response: only closing is left
      co_await ex.send_error(*failure);
      if (ec == http::error::body_limit || refused) co_await linger(socket);
    }
    const std::string route = match.route ? match.route->pattern : "unmatched";
    api_.metrics().request_done(route, static_cast<int>(ex.status()));
    log(spdlog::level::info, "request",
        {{"method", std::string(request.method_string())},
         {"route", route},
         {"status", static_cast<int>(ex.status())},
         {"ms", std::chrono::duration<double, std::milli>(Clock::now() - start).count()}});
    co_return !ec && !refused && ex.keep_alive();
  }

  // After refusing a body unread, drops what the client still sends (bounded in time and
  // bytes) so its write completes and it reads the refusal rather than a broken pipe.
  asio::awaitable<void> linger(Socket& socket) {
    boost::system::error_code ec;
    socket.shutdown(Socket::shutdown_send, ec);
    asio::steady_timer timer(ctx_, kLingerTime);
    timer.async_wait([&socket](boost::system::error_code e) {
      if (!e) socket.cancel(e);
    });
    std::vector<char> sink(64 * 1024);
    for (std::uint64_t total = 0; total < kLingerBytes;) {
      total += co_await socket.async_read_some(asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
    }
    timer.cancel();
  }

  asio::awaitable<void> shutdown_on_signal() {
    asio::signal_set signals(ctx_, SIGINT, SIGTERM);
    int signo = co_await signals.async_wait(asio::use_awaitable);
    log(spdlog::level::info, "shutting down", {{"signal", signo}, {"grace_s", options_.shutdown_grace.count()}});
    draining_ = true;
    api_.begin_drain();
    boost::system::error_code ec;
    unix_acceptor_.close(ec);
    tcp_acceptor_.close(ec);
    remove_socket();
    asio::steady_timer tick(ctx_);
    const auto deadline = Clock::now() + options_.shutdown_grace;
    while (active_ > 0 && Clock::now() < deadline) {
      tick.expires_after(std::chrono::milliseconds(50));
      co_await tick.async_wait(asio::use_awaitable);
    }
    if (active_ > 0) log(spdlog::level::warn, "cancelling requests still running", {{"requests", active_}});
    api_.sessions().stop_reaping();
    api_.sessions().destroy_all();
    manager_->stop();
    connections_.close_all();
    drained_ = true;
    log(spdlog::level::info, "stopped: every VM destroyed", {{"open_connections", connections_.size()}});
    if (on_drained_) on_drained_();
  }

  asio::io_context& ctx_;
  const ServerOptions& options_;
  std::shared_ptr<VmManager> manager_;
  Api api_;
  asio::local::stream_protocol::acceptor unix_acceptor_;
  asio::ip::tcp::acceptor tcp_acceptor_;
  fs::path socket_path_;
  std::string token_;
  ConnectionTable connections_;
  unsigned active_ = 0;
  bool draining_ = false;
  bool drained_ = false;
  std::function<void()> on_drained_;
};

// Exits the process if the event loop still runs `limit` after the drain: every VM is gone
// and the socket removed by then, and a coroutine that never ends must not keep a stopped
// server alive. (_Exit, not io_context::stop: destroying the frames left behind would touch
// the Server they point into after it is gone.)
class ShutdownWatchdog final {
 public:
  explicit ShutdownWatchdog(std::chrono::seconds limit)
      : thread_([this, limit] {
          std::unique_lock lock(mutex_);
          cv_.wait(lock, [this] { return drained_ || finished_; });
          if (cv_.wait_for(lock, limit, [this] { return finished_; })) return;
          log(spdlog::level::warn, "the event loop still runs after the drain; exiting", {{"seconds", limit.count()}});
          std::_Exit(0);
        }) {}
  ~ShutdownWatchdog() {
    notify(finished_);
    thread_.join();
  }
  ShutdownWatchdog(const ShutdownWatchdog&) = delete;
  ShutdownWatchdog& operator=(const ShutdownWatchdog&) = delete;
  void drained() { notify(drained_); }

 private:
  void notify(bool& flag) {
    {
      std::lock_guard lock(mutex_);
      flag = true;
    }
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  bool drained_ = false;
  bool finished_ = false;
  std::thread thread_;  // last: it starts once the rest is built
};

}  // namespace

fs::path default_socket_path() {
  if (const char* s = std::getenv("VIAL_SOCKET"); s && *s) return s;
  return run_dir() / "vial.sock";
}

std::string read_token_file(const fs::path& file) {
  std::istringstream in(read_user_file(file, 4096, "the token file"));
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.size() < 16) {
    throw Error(ErrorKind::invalid_input, "the token in " + file.string() + " is shorter than 16 characters; "
                                          "make a strong one: head -c 32 /dev/urandom | base64");
  }
  return token;
}

void serve(const ServerOptions& options) {
  init_logging(options.log_json);
  asio::io_context ctx(1);
  auto manager = VmManager::create(ctx.get_executor(), options.engine);
  Server server(ctx, options, manager);
  ShutdownWatchdog watchdog(kShutdownWatchdog);
  server.on_drained([&watchdog] { watchdog.drained(); });
  server.open_unix(options.socket_path.empty() ? default_socket_path() : options.socket_path);
  if (options.listen) server.open_tcp(*options.listen, options.token_file ? read_token_file(*options.token_file) : "");
  std::exception_ptr start_error;
  asio::co_spawn(ctx, manager->start(), [&](std::exception_ptr e) {
    if (!e) return server.start();
    start_error = e;
    server.remove_socket();
    ctx.stop();
  });
  ctx.run();
  if (start_error) std::rethrow_exception(start_error);
  // Every coroutine ended (acceptors and connections closed, VMs destroyed) before run() returned.
  if (!server.drained()) server.remove_socket();
}

}  // namespace vial::server
