#include "server/connections.h"

#include <sys/resource.h>

#include <algorithm>

namespace vial::server {

size_t connection_cap(size_t fd_limit) { return std::clamp<size_t>(fd_limit / 4, 8, 1024); }

size_t open_file_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 1 << 20;
  return static_cast<size_t>(r.rlim_cur);
}

bool ConnectionTable::admit(const std::shared_ptr<Socket>& socket) {
  if (entries_.size() >= cap_) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.waiting && (oldest == entries_.end() || it->second.waiting_since < oldest->second.waiting_since))
        oldest = it;
    }
    if (oldest == entries_.end()) return false;
    boost::system::error_code ec;
    oldest->second.socket->close(ec);  // its coroutine sees the error and removes it
    entries_.erase(oldest);
  }
  entries_[socket.get()] = Entry{socket, std::chrono::steady_clock::now(), true};
  return true;
}

void ConnectionTable::set_waiting(const Socket& socket, bool waiting) {
  auto it = entries_.find(&socket);
  if (it == entries_.end()) return;
  if (waiting && !it->second.waiting) it->second.waiting_since = std::chrono::steady_clock::now();
  it->second.waiting = waiting;
}

void ConnectionTable::remove(const std::shared_ptr<Socket>& socket) { entries_.erase(socket.get()); }

void ConnectionTable::close_all() {
  boost::system::error_code ec;
  for (auto& [ptr, e] : entries_) e.socket->close(ec);
}

}  // namespace vial::server
