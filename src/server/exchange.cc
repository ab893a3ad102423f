#include "server/exchange.h"

#include <sys/socket.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "sandbox/run_json.h"

namespace vial::server {
namespace {

constexpr std::string_view kServerName = "vial/" VIAL_VERSION;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

http::status status_of(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_input: return http::status::bad_request;
    case ErrorKind::not_found: return http::status::not_found;
    case ErrorKind::conflict: return http::status::conflict;
    case ErrorKind::capacity: return http::status::service_unavailable;
    case ErrorKind::too_large: return http::status::payload_too_large;
    case ErrorKind::unavailable: return http::status::service_unavailable;
    case ErrorKind::timeout: return http::status::gateway_timeout;
    case ErrorKind::boot_failed: return http::status::bad_gateway;
    case ErrorKind::cancelled: return http::status::service_unavailable;
    case ErrorKind::internal: return http::status::internal_server_error;
  }
  return http::status::internal_server_error;
}

}  // namespace

std::string percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() && hex_value(in[i + 1]) >= 0 && hex_value(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

ErrorReply error_reply(const std::exception& error) {
  if (auto* h = dynamic_cast<const HttpError*>(&error)) return {h->status(), h->code(), h->what(), std::nullopt};
  if (auto* e = dynamic_cast<const Error*>(&error)) {
    ErrorReply reply{status_of(e->kind()), std::string(to_string(e->kind())), e->what(), std::nullopt};
    if (e->kind() == ErrorKind::capacity) reply.retry_after_s = 1;
    return reply;
  }
  return {http::status::internal_server_error, "internal", error.what(), std::nullopt};
}

ErrorReply error_reply(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return error_reply(e);
  } catch (...) {
    return {http::status::internal_server_error, "internal", "unknown error", std::nullopt};
  }
}

nlohmann::json error_body(const ErrorReply& reply) {
  return {{"error", {{"code", reply.code}, {"message", reply.message}}}};
}

std::optional<std::string> Exchange::query(std::string_view key) const {
  std::string_view target = request_.target();
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    if (percent_decode(pair.substr(0, eq)) == key) {
      return eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

nlohmann::json Exchange::json_body() const {
  if (request_.body().empty()) return nlohmann::json::object();
  auto j = nlohmann::json::parse(request_.body(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(ErrorKind::invalid_input, "the request body is not valid JSON");
  if (!j.is_object()) throw Error(ErrorKind::invalid_input, "the request body must be a JSON object");
  return j;
}

bool Exchange::wants_ndjson() const {
  auto it = request_.find(http::field::accept);
  return it != request_.end() && it->value().find("application/x-ndjson") != std::string_view::npos;
}

asio::awaitable<void> Exchange::send(http::status status, std::string body, std::string_view content_type) {
  http::response<http::string_body> res{status, request_.version()};
  res.set(http::field::server, kServerName);
  res.set(http::field::content_type, content_type);
  res.keep_alive(request_.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  responded_ = true;
  status_ = status;
  keep_alive_ = res.keep_alive();
  co_await http::async_write(socket_, res, asio::use_awaitable);
}

asio::awaitable<void> Exchange::send_json(http::status status, const nlohmann::json& body) {
  co_await send(status, dump_json(body) + "\n", "application/json");
}

asio::awaitable<void> Exchange::send_error(const ErrorReply& reply) {
  if (streaming_) {
    queue_event({{"type", "error"}, {"error", error_body(reply)["error"]}});
    finish_stream();
    co_await pump();
    co_return;
  }
  http::response<http::string_body> res{reply.status, request_.version()};
  res.set(http::field::server, kServerName);
  res.set(http::field::content_type, "application/json");
  if (reply.retry_after_s) res.set(http::field::retry_after, std::to_string(*reply.retry_after_s));
  if (reply.status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
  // After a bad request the stream may be out of sync (an unread body): close it.
  res.keep_alive(request_.keep_alive() && reply.status != http::status::payload_too_large);
  res.body() = dump_json(error_body(reply)) + "\n";
  res.prepare_payload();
  responded_ = true;
  status_ = reply.status;
  keep_alive_ = res.keep_alive();
  co_await http::async_write(socket_, res, asio::use_awaitable);
}

asio::awaitable<void> Exchange::begin_stream() {
  http::response<http::empty_body> res{http::status::ok, request_.version()};
  res.set(http::field::server, kServerName);
  res.set(http::field::content_type, "application/x-ndjson");
  res.keep_alive(request_.keep_alive());
  res.chunked(true);
  http::response_serializer<http::empty_body> sr{res};
  responded_ = true;
  streaming_ = true;
  keep_alive_ = res.keep_alive();
  wake_.emplace(socket_.get_executor(), asio::steady_timer::time_point::max());
  co_await http::async_write_header(socket_, sr, asio::use_awaitable);
}

void Exchange::queue_event(const nlohmann::json& event) {
  events_.push_back(dump_json(event) + "\n");
  if (wake_) wake_->cancel();
}

void Exchange::finish_stream() {
  finished_ = true;
  if (wake_) wake_->cancel();
}

asio::awaitable<void> Exchange::write_chunk(std::string data) {
  co_await asio::async_write(socket_, http::make_chunk(asio::buffer(data)), asio::use_awaitable);
}

asio::awaitable<void> Exchange::pump() {
  for (;;) {
    while (!events_.empty()) {
      std::string next = std::move(events_.front());
      events_.pop_front();
      co_await write_chunk(std::move(next));
    }
    if (finished_) break;
    wake_->expires_at(asio::steady_timer::time_point::max());
    boost::system::error_code ec;
    co_await wake_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    // Cancelled from outside (not by queue_event/finish_stream): stop writing.
    if (ec && events_.empty() && !finished_) throw boost::system::system_error(ec);
  }
  co_await asio::async_write(socket_, http::make_chunk_last(), asio::use_awaitable);
}

asio::awaitable<void> Exchange::client_gone() {
  for (;;) {
    co_await socket_.async_wait(Socket::wait_read, asio::use_awaitable);
    char c;
    ssize_t n = ::recv(socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) co_return;
    if (n > 0) {
      // A pipelined request, not a hang-up: nothing more to learn until the work ends.
      asio::steady_timer forever(socket_.get_executor(), asio::steady_timer::time_point::max());
      co_await forever.async_wait(asio::use_awaitable);
    }
  }
}

}  // namespace vial::server
