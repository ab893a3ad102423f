// The server's open connections, capped so that clients can't take every fd the process has
// (a full fd table makes accept() fail, and a server that can't accept is down). When a new
// connection would pass the cap, the oldest one still waiting for a request header goes first:
// a client holding connections with half-sent headers loses them, not the clients being
// served. When every connection is busy with a request, the new one is refused.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>

#include "server/exchange.h"

namespace vial::server {

// The cap for a process allowed `fd_limit` open files: a quarter of them (VMs, their agent
// channels and their network streams need the rest), at least 8, at most 1024.
size_t connection_cap(size_t fd_limit);
// The soft RLIMIT_NOFILE of this process.
size_t open_file_limit();

class ConnectionTable final {
 public:
  explicit ConnectionTable(size_t cap) : cap_(cap) {}

  // Adds `socket` (waiting for its first header). When the table is full, closes the oldest
  // waiting connection to make room; false (and nothing added) when none is waiting.
  bool admit(const std::shared_ptr<Socket>& socket);
  // A connection is waiting while it has no complete request header (between requests too).
  void set_waiting(const Socket& socket, bool waiting);
  void remove(const std::shared_ptr<Socket>& socket);
  void close_all();
  size_t size() const { return entries_.size(); }
  size_t cap() const { return cap_; }

 private:
  struct Entry {
    std::shared_ptr<Socket> socket;
    std::chrono::steady_clock::time_point waiting_since;
    bool waiting = true;
  };
  size_t cap_;
  std::map<const Socket*, Entry> entries_;
};

}  // namespace vial::server
