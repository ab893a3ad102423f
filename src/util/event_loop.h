// Runs engine coroutines to completion from synchronous code (the CLI, benches).
#pragma once

#include <exception>
#include <functional>

#include <boost/asio/awaitable.hpp>

namespace vial {

// Thrown by run_with_signals when SIGINT or SIGTERM arrived.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

// Runs `task` on a fresh io_context and rethrows what it threw. On SIGINT/SIGTERM the
// io_context stops and is destroyed, which unwinds the coroutine, so every VM it owns is
// killed and its files removed; then Interrupted is thrown.
void run_with_signals(const std::function<boost::asio::awaitable<void>()>& task);

}  // namespace vial
