#include "guest/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "guest/init.h"
#include "guest/net_setup.h"
#include "guest/util.h"

namespace vial::guest {

using agent::FrameType;

namespace {
// Connections open at once; more are reset at once (the host has its own, lower, limit).
constexpr size_t kMaxStreams = 512;
// DNS queries waiting for the host, and how long one may wait.
constexpr size_t kMaxQueries = 256;
constexpr int64_t kQueryTimeoutMs = 15000;
constexpr size_t kReadChunk = 64 * 1024;

std::string reason_json(const std::string& reason) {
  return reason.empty() ? std::string() : nlohmann::json{{"reason", reason}}.dump();
}
}  // namespace

Net::~Net() {
  reset();
  if (listener_ >= 0) close(listener_);
  if (dns_ >= 0) close(dns_);
}

void Net::prepare() {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // A parked guest's lo is still down, so 127.0.0.1 does not exist yet.
  int one = 1;
  if (l >= 0) setsockopt(l, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  if (l < 0 || bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(l, 256) != 0) {
    prepare_error_ = std::string("listening socket: ") + strerror(errno);
    if (l >= 0) close(l);
    return;
  }
  if (std::string e = attach_steering(map_); !e.empty()) {
    prepare_error_ = e;
    boot_mark(("network unavailable: " + e).c_str());  // `dmesg | grep vial-init` says why
    close(l);
    return;
  }
  listener_ = l;
  prepare_error_.clear();
}

std::string Net::up(const agent::NetUpBody& body, bool write_resolv_conf) {
  if (up_) return {};
  if (!prepare_error_.empty()) return prepare_error_;
  in_addr dns_addr{};
  if (inet_pton(AF_INET, body.dns.c_str(), &dns_addr) != 1) return "bad DNS address '" + body.dns + "'";
  int d = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  sockaddr_in da{};
  da.sin_family = AF_INET;
  da.sin_addr = dns_addr;
  da.sin_port = htons(53);
  if (d < 0 || bind(d, reinterpret_cast<sockaddr*>(&da), sizeof da) != 0) {
    std::string e = "DNS socket on " + body.dns + ":53: " + strerror(errno);
    if (d >= 0) close(d);
    return e;
  }
  if (std::string e = steer_tcp_to(map_, listener_); !e.empty()) {
    close(d);
    return e;
  }
  dns_ = d;
  up_ = true;
  // Images leave resolv.conf empty (glibc then asks 127.0.0.1, ours); a pack may name another
  // resolver, which the guest can't reach: point it at ours. Written only when needed (a
  // write to the root disk costs a clone ~20 ms under TCG).
  std::string current;
  const std::string ours = "nameserver " + body.dns + "\n";
  const bool glibc_default = body.dns == "127.0.0.1" && read_file("/etc/resolv.conf", current) &&
                             current.find_first_not_of(" \t\n") == std::string::npos;
  if (write_resolv_conf && !glibc_default && current != ours) write_file("/etc/resolv.conf", ours, true, 0644);
  return {};
}

void Net::reset() {
  for (auto& [id, s] : streams_) {
    if (s.fd >= 0) close(s.fd);
  }
  streams_.clear();
  queries_.clear();
}

void Net::drop(uint32_t id, bool reset, bool tell_host, const std::string& reason) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  if (it->second.fd >= 0) {
    if (reset) {
      linger lg{1, 0};  // close with RST: the program sees its connection reset
      setsockopt(it->second.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(it->second.fd);
  }
  streams_.erase(it);
  if (tell_host) send_(FrameType::net_close, id, reason_json(reason));
}

void Net::maybe_finish(uint32_t id, Stream& s) {
  if (s.peer_eof && s.to_socket_off == s.to_socket.size() && !s.shut_write) {
    shutdown(s.fd, SHUT_WR);
    s.shut_write = true;
  }
  // Both directions are done: nothing more will flow, and both sides know it.
  if (s.read_eof && s.shut_write) drop(id, false, false);
}

void Net::accept_connections() {
  for (int k = 0; k < 64; ++k) {
    int fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    sockaddr_in dst{};
    socklen_t len = sizeof dst;
    if (streams_.size() >= kMaxStreams || getsockname(fd, reinterpret_cast<sockaddr*>(&dst), &len) != 0) {
      linger lg{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      close(fd);
      continue;
    }
    char ip[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &dst.sin_addr, ip, sizeof ip);
    uint32_t id = agent::kGuestStreamBit | (next_id_++ & ~agent::kGuestStreamBit);
    Stream s;
    s.fd = fd;
    streams_[id] = std::move(s);
    nlohmann::json j = agent::NetOpenBody{ip, ntohs(dst.sin_port)};
    send_(FrameType::net_open, id, j.dump());
  }
}

void Net::read_dns() {
  for (int k = 0; k < 64; ++k) {
    char buf[4096];
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(dns_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) return;
    if (n == 0 || queries_.size() >= kMaxQueries) continue;  // the program will retry
    uint32_t id = agent::kGuestStreamBit | (next_id_++ & ~agent::kGuestStreamBit);
    queries_[id] = Query{from, now_ms() + kQueryTimeoutMs};
    send_(FrameType::dns, id, std::string_view(buf, static_cast<size_t>(n)));
  }
}

void Net::open_from_host(uint32_t id, const std::string& payload) {
  agent::NetOpenBody body;
  try {
    body = agent::parse_body<agent::NetOpenBody>(payload);
  } catch (const std::exception& e) {
    send_(FrameType::net_close, id, reason_json(e.what()));
    return;
  }
  if ((id & agent::kGuestStreamBit) || streams_.count(id) || streams_.size() >= kMaxStreams) {
    send_(FrameType::net_close, id, reason_json("stream id in use or too many streams"));
    return;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(body.port);
  if (fd < 0 || (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS)) {
    std::string e = "connect to 127.0.0.1:" + std::to_string(body.port) + " in the guest: " + strerror(errno);
    if (fd >= 0) close(fd);
    send_(FrameType::net_close, id, reason_json(e));
    return;
  }
  Stream s;
  s.fd = fd;
  s.connecting = true;
  streams_[id] = std::move(s);
}

void Net::finish_connect(uint32_t id, Stream& s) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    drop(id, false, true, std::string("connect in the guest: ") + strerror(err));
    return;
  }
  s.connecting = false;
  s.opened = true;
  send_(FrameType::net_opened, id, {});
}

void Net::read_socket(uint32_t id, Stream& s) {
  static std::string buf(kReadChunk, '\0');
  if (!s.opened || s.read_eof || s.in_flight >= agent::kNetWindow) return;
  size_t room = static_cast<size_t>(std::min<uint64_t>(kReadChunk, agent::kNetWindow - s.in_flight));
  ssize_t n = read(s.fd, buf.data(), room);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) {
    drop(id, false, true, std::string("guest socket: ") + strerror(errno));
    return;
  }
  if (n == 0) {
    s.read_eof = true;
    send_(FrameType::net_eof, id, {});
    maybe_finish(id, s);
    return;
  }
  s.in_flight += static_cast<uint64_t>(n);
  send_(FrameType::net_data, id, std::string_view(buf.data(), static_cast<size_t>(n)));
}

void Net::write_socket(uint32_t id, Stream& s) {
  size_t before = s.to_socket_off;
  while (s.to_socket_off < s.to_socket.size()) {
    ssize_t n = write(s.fd, s.to_socket.data() + s.to_socket_off, s.to_socket.size() - s.to_socket_off);
    if (n > 0) {
      s.to_socket_off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      break;
    } else {
      drop(id, true, true, std::string("guest socket: ") + strerror(errno));
      return;
    }
  }
  if (s.to_socket_off > before) {
    nlohmann::json j = agent::NetAckBody{s.to_socket_off - before};
    send_(FrameType::net_ack, id, j.dump());
  }
  if (s.to_socket_off == s.to_socket.size()) {
    s.to_socket.clear();
    s.to_socket_off = 0;
  }
  maybe_finish(id, s);
}

void Net::handle(const agent::Frame& f) {
  if (f.type == FrameType::dns) {
    auto q = queries_.find(f.request_id);
    if (q == queries_.end()) return;  // timed out meanwhile
    sendto(dns_, f.payload.data(), f.payload.size(), 0, reinterpret_cast<const sockaddr*>(&q->second.from),
           sizeof q->second.from);
    queries_.erase(q);
    return;
  }
  if (f.type == FrameType::net_open) {
    open_from_host(f.request_id, f.payload);
    return;
  }
  auto it = streams_.find(f.request_id);
  if (it == streams_.end()) return;  // a stream that ended meanwhile
  Stream& s = it->second;
  switch (f.type) {
    case FrameType::net_opened:
      s.opened = true;
      return;
    case FrameType::net_data:
      // More than the window in flight breaks the protocol: a host bug; end the stream.
      if (s.to_socket.size() - s.to_socket_off + f.payload.size() > 2 * agent::kNetWindow) {
        drop(f.request_id, true, true, "the host overran the window");
        return;
      }
      s.to_socket += f.payload;
      write_socket(f.request_id, s);
      return;
    case FrameType::net_ack: {
      uint64_t n = 0;
      try {
        n = agent::parse_body<agent::NetAckBody>(f.payload).bytes;
      } catch (const std::exception&) {
      }
      s.in_flight -= std::min(n, s.in_flight);
      return;
    }
    case FrameType::net_eof:
      s.peer_eof = true;
      maybe_finish(f.request_id, s);
      return;
    case FrameType::net_close:
      drop(f.request_id, true, false);
      return;
    default:
      return;
  }
}

void Net::append_pollfds(std::vector<pollfd>& pfds, bool backpressure) {
  polled_.clear();
  if (!up_) return;
  if (!backpressure) {
    pfds.push_back({listener_, POLLIN, 0});
    polled_.push_back({Kind::listener, 0});
    pfds.push_back({dns_, POLLIN, 0});
    polled_.push_back({Kind::dns, 0});
  }
  for (auto& [id, s] : streams_) {
    short ev = 0;
    if (s.connecting) ev |= POLLOUT;
    if (s.opened && !s.read_eof && !backpressure && s.in_flight < agent::kNetWindow) ev |= POLLIN;
    if (s.to_socket_off < s.to_socket.size()) ev |= POLLOUT;
    if (ev == 0) continue;
    pfds.push_back({s.fd, ev, 0});
    polled_.push_back({Kind::stream, id});
  }
}

void Net::on_events(const pollfd* pfds, size_t n, int64_t now) {
  for (size_t i = 0; i < n && i < polled_.size(); ++i) {
    short rev = pfds[i].revents;
    if (!rev) continue;
    const Polled& p = polled_[i];
    if (p.kind == Kind::listener) {
      accept_connections();
      continue;
    }
    if (p.kind == Kind::dns) {
      read_dns();
      continue;
    }
    auto it = streams_.find(p.id);
    if (it == streams_.end()) continue;  // dropped by an earlier event in this round
    Stream& s = it->second;
    if (s.connecting) {
      finish_connect(p.id, s);
      continue;
    }
    if (rev & POLLOUT) {
      write_socket(p.id, s);
      it = streams_.find(p.id);
      if (it == streams_.end()) continue;
    }
    if (rev & (POLLIN | POLLHUP | POLLERR)) read_socket(p.id, it->second);
  }
  for (auto q = queries_.begin(); q != queries_.end();) {
    q = q->second.expires_ms <= now ? queries_.erase(q) : std::next(q);
  }
}

}  // namespace vial::guest
