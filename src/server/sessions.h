// Sessions: a VM kept across HTTP calls (a notebook, an agent's scratch machine), reaped after
// it has been idle for its timeout. Lives on the server's io_context, like the VmManager.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "sandbox/vm_manager.h"

namespace vial::server {

inline constexpr std::chrono::seconds kDefaultIdleTimeout{600};
inline constexpr std::chrono::seconds kMaxIdleTimeout{24 * 3600};

struct Session {
  std::string id;
  std::string language;
  std::shared_ptr<Vm> vm;
  std::chrono::seconds idle_timeout{kDefaultIdleTimeout};
  std::chrono::steady_clock::time_point last_used;
  std::chrono::system_clock::time_point created_at;
  unsigned execs = 0;
  bool busy = false;  // an exec is running (one at a time: cells of a notebook run in order)
  net::NetPolicy network;
};

class SessionStore final {
 public:
  explicit SessionStore(std::shared_ptr<VmManager> manager) : manager_(std::move(manager)) {}

  // `network` off by default; its published ports are bound before the VM is made.
  asio::awaitable<std::shared_ptr<Session>> create(const std::string& language, std::chrono::seconds idle_timeout,
                                                   const std::string& tenant, const net::NetPolicy& network);
  // Throws Error(not_found) for an unknown (or reaped) id.
  std::shared_ptr<Session> get(const std::string& id) const;
  // Destroys the session's VM. Throws Error(not_found) for an unknown id.
  void remove(const std::string& id);
  std::vector<std::shared_ptr<Session>> list() const;
  size_t size() const { return sessions_.size(); }
  unsigned busy() const;
  // Marks the session used now (idle time restarts).
  void touch(Session& session) const { session.last_used = std::chrono::steady_clock::now(); }

  // Reaps idle sessions every second until stop_reaping(); run it detached.
  asio::awaitable<void> reap_loop();
  void stop_reaping();
  void destroy_all();

 private:
  std::shared_ptr<VmManager> manager_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  std::shared_ptr<asio::steady_timer> reap_timer_;
  bool stopped_ = false;
};

// 128 random bits as 32 hex characters.
std::string random_id();

// ISO 8601 UTC with milliseconds ("2026-11-26T16:29:41.123Z").
std::string iso8601(std::chrono::system_clock::time_point t);

}  // namespace vial::server
