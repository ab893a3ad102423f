// `vial serve`: the HTTP API on a unix socket (default, mode 0600) and optionally on TCP with a
// bearer token. One io_context runs the listeners, the connections and the engine; VM work is
// asynchronous, so it never blocks the HTTP side.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "sandbox/vm_manager.h"
#include "server/api.h"

namespace vial::server {

struct ServerOptions {
  std::filesystem::path socket_path;  // empty: default_socket_path()
  std::optional<std::string> listen;  // "HOST:PORT" for TCP
  std::optional<std::filesystem::path> token_file;
  VmManagerSettings engine;
  ApiSettings api;
  bool log_json = false;
  // On SIGTERM/SIGINT: how long running requests may finish before they are cancelled.
  std::chrono::seconds shutdown_grace{10};
};

// $VIAL_SOCKET, else $VIAL_HOME/run/vial.sock.
std::filesystem::path default_socket_path();

// Runs until SIGTERM or SIGINT, then shuts down gracefully: stop accepting, let running work
// finish within the grace period, destroy every VM, remove the socket. Throws Error when it
// can't start (socket in use, port busy, TCP without a token...).
void serve(const ServerOptions& options);

// Reads a bearer token: the file's first line, at least 16 characters.
std::string read_token_file(const std::filesystem::path& file);

}  // namespace vial::server
