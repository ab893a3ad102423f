// One HTTP request and its response, as the API handlers see it: read the request, answer with
// JSON, bytes or an error, or stream NDJSON events in chunks. Handlers never touch Beast.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace vial::server {

namespace asio = boost::asio;
namespace http = boost::beast::http;
// Unix and TCP connections share one socket type, so one code path serves both.
using Socket = asio::generic::stream_protocol::socket;
using Request = http::request<http::string_body>;

// An HTTP-level failure that has no ErrorKind (auth, body too large, wrong method).
class HttpError final : public std::runtime_error {
 public:
  HttpError(http::status status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  http::status status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  http::status status_;
  std::string code_;
};

// The status, error code and extra headers an exception maps to.
struct ErrorReply {
  http::status status;
  std::string code;
  std::string message;
  std::optional<int> retry_after_s;  // capacity errors: when to try again
};
ErrorReply error_reply(const std::exception& error);
ErrorReply error_reply(std::exception_ptr error);
nlohmann::json error_body(const ErrorReply& reply);

class Exchange final {
 public:
  Exchange(Socket& socket, Request& request, std::map<std::string, std::string> params)
      : socket_(socket), request_(request), params_(std::move(params)) {}

  const Request& request() const { return request_; }
  // A path parameter of the route ("id", "path"), percent-decoded.
  const std::string& param(const std::string& name) const { return params_.at(name); }
  // A query parameter, percent-decoded; nullopt when absent.
  std::optional<std::string> query(std::string_view key) const;
  // The body parsed as a JSON object; Error(invalid_input) when it is not JSON ("{}" if empty).
  nlohmann::json json_body() const;
  bool wants_ndjson() const;

  asio::awaitable<void> send(http::status status, std::string body, std::string_view content_type);
  asio::awaitable<void> send_json(http::status status, const nlohmann::json& body);
  // Maps `error` to a status and {error: {code, message}}; inside a stream, an `error` event.
  asio::awaitable<void> send_error(const ErrorReply& reply);

  // Chunked NDJSON: begin once, then queue events (safe from synchronous callbacks: a writer
  // coroutine sends them in order), then finish. pump() is that writer; run it beside the work.
  asio::awaitable<void> begin_stream();
  void queue_event(const nlohmann::json& event);
  // Sends queued events until finish_stream() was called and the queue is empty. Throws when
  // the client went away (the caller's work is then cancelled).
  asio::awaitable<void> pump();
  void finish_stream();

  // Completes (without throwing) when the client closes its end: the caller races its work
  // against it so a vanished client cancels the work. Pipelined requests don't count.
  asio::awaitable<void> client_gone();

  bool responded() const { return responded_; }
  bool streaming() const { return streaming_; }
  http::status status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }

 private:
  asio::awaitable<void> write_chunk(std::string data);

  Socket& socket_;
  Request& request_;
  std::map<std::string, std::string> params_;
  bool responded_ = false;
  bool streaming_ = false;
  bool finished_ = false;
  bool keep_alive_ = true;
  http::status status_ = http::status::ok;
  std::deque<std::string> events_;
  std::optional<asio::steady_timer> wake_;
};

std::string percent_decode(std::string_view in);

}  // namespace vial::server
