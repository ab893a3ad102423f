#include "server/daemon_client.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "sandbox/run_json.h"
#include "server/server.h"
#include "util/error.h"

namespace vial::server {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using Socket = asio::local::stream_protocol::socket;

bool answers(const std::filesystem::path& path, asio::io_context& io) {
  Socket probe(io);
  boost::system::error_code ec;
  probe.connect(asio::local::stream_protocol::endpoint(path.string()), ec);
  return !ec;
}

ErrorKind kind_from_code(const std::string& code) {
  for (ErrorKind k : {ErrorKind::invalid_input, ErrorKind::not_found, ErrorKind::conflict, ErrorKind::unavailable,
                      ErrorKind::boot_failed, ErrorKind::timeout, ErrorKind::capacity, ErrorKind::cancelled, ErrorKind::too_large}) {
    if (to_string(k) == code) return k;
  }
  return code == "bad_request" ? ErrorKind::invalid_input : ErrorKind::internal;
}

[[noreturn]] void throw_reply_error(int status, const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    throw_api_error(j["error"].value("code", ""), j["error"].value("message", "the server failed"));
  }
  throw Error(ErrorKind::internal, "the vial server answered HTTP " + std::to_string(status));
}

struct Connection {
  asio::io_context io;
  Socket socket{io};
  boost::beast::flat_buffer buffer;

  explicit Connection(const std::filesystem::path& path) {
    boost::system::error_code ec;
    socket.connect(asio::local::stream_protocol::endpoint(path.string()), ec);
    if (ec) {
      throw Error(ErrorKind::unavailable, "cannot reach the vial server at " + path.string() + " (" + ec.message() +
                                              "); start one with `vial serve`");
    }
  }

  void send(const std::string& method, const std::string& target, const std::string& body,
            const std::string& content_type, const std::string& accept) {
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "vial");
    req.set(http::field::accept, accept);
    if (!body.empty()) req.set(http::field::content_type, content_type);
    req.body() = body;
    req.prepare_payload();
    http::write(socket, req);
  }
};

// A server that dies (or is killed) mid-reply leaves a cut HTTP message: say so in words.
[[noreturn]] void server_went_away(const boost::system::system_error& e, const std::string& during) {
  throw Error(ErrorKind::unavailable, "the vial server went away during " + during + " (" + e.code().message() +
                                          "); check that `vial serve` is still running");
}

}  // namespace

void throw_api_error(const std::string& code, const std::string& message) {
  throw Error(kind_from_code(code), message.empty() ? "the vial server failed (" + code + ")" : message);
}

std::optional<std::filesystem::path> find_daemon(const std::string& explicit_socket) {
  if (!explicit_socket.empty()) return std::filesystem::path(explicit_socket);
  auto path = server::default_socket_path();
  asio::io_context io;
  if (answers(path, io)) return path;
  return std::nullopt;
}

std::filesystem::path require_daemon(const std::string& explicit_socket) {
  if (auto path = find_daemon(explicit_socket)) return *path;
  throw Error(ErrorKind::unavailable, "no vial server is running on " + server::default_socket_path().string() +
                                          "; start one with `vial serve` (or pass --socket PATH)");
}

DaemonReply DaemonClient::call(const std::string& method, const std::string& target, const std::string& body,
                               const std::string& content_type) {
  Connection c(socket_);
  c.send(method, target, body, content_type, "application/json");
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  try {
    http::read(c.socket, c.buffer, parser);
  } catch (const boost::system::system_error& e) {
    server_went_away(e, "the request");
  }
  auto& res = parser.get();
  int status = static_cast<int>(res.result_int());
  if (status < 200 || status > 299) throw_reply_error(status, res.body());
  return {status, std::move(res.body())};
}

nlohmann::json DaemonClient::call_json(const std::string& method, const std::string& target, const nlohmann::json& body) {
  DaemonReply reply = call(method, target, body.is_null() ? std::string() : dump_json(body));
  auto j = nlohmann::json::parse(reply.body, nullptr, false);
  if (j.is_discarded()) throw Error(ErrorKind::internal, "the vial server sent a reply that is not JSON");
  return j;
}

void DaemonClient::stream(const std::string& target, const nlohmann::json& body,
                          const std::function<void(const nlohmann::json&)>& on_event) {
  Connection c(socket_);
  c.send("POST", target, dump_json(body), "application/json", "application/x-ndjson");
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  http::read_header(c.socket, c.buffer, parser);
  int status = static_cast<int>(parser.get().result_int());
  if (status < 200 || status > 299) {
    http::read(c.socket, c.buffer, parser);
    throw_reply_error(status, parser.get().body());
  }
  std::string pending;
  auto on_chunk = [&](std::uint64_t, std::string_view data, boost::system::error_code&) -> std::size_t {
    pending.append(data);
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      auto event = nlohmann::json::parse(pending.substr(0, nl), nullptr, false);
      pending.erase(0, nl + 1);
      if (!event.is_discarded()) on_event(event);
    }
    return data.size();
  };
  parser.on_chunk_body(on_chunk);
  try {
    while (!parser.is_done()) http::read_some(c.socket, c.buffer, parser);
  } catch (const boost::system::system_error& e) {
    server_went_away(e, "the run");
  }
}

std::string url_path_escape(std::string_view path) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace vial::server
