// The client side of `vial serve` (the CLI, `vial bench server`): a small synchronous HTTP
// client over the daemon's unix socket.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace vial::server {

// The socket to use: --socket if given, else $VIAL_SOCKET, else the default one. nullopt when no
// server answers there (and none was asked for explicitly).
std::optional<std::filesystem::path> find_daemon(const std::string& explicit_socket);

// Like find_daemon, but a missing server is an error that says how to start one.
std::filesystem::path require_daemon(const std::string& explicit_socket);

struct DaemonReply {
  int status = 0;
  std::string body;
};

class DaemonClient final {
 public:
  explicit DaemonClient(std::filesystem::path socket) : socket_(std::move(socket)) {}

  // Sends one request; a non-2xx reply throws Error with the server's kind and message.
  DaemonReply call(const std::string& method, const std::string& target, const std::string& body = {},
                   const std::string& content_type = "application/json");
  nlohmann::json call_json(const std::string& method, const std::string& target, const nlohmann::json& body = nullptr);
  // POSTs `body` asking for NDJSON and hands each event to on_event as it arrives.
  void stream(const std::string& target, const nlohmann::json& body,
              const std::function<void(const nlohmann::json&)>& on_event);

 private:
  std::filesystem::path socket_;
};

// Throws the Error an API error {code, message} stands for.
[[noreturn]] void throw_api_error(const std::string& code, const std::string& message);

// "a b/ü" -> "a%20b/%C3%BC": a path for a URL, slashes kept.
std::string url_path_escape(std::string_view path);

}  // namespace vial::server
