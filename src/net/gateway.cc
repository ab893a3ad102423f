#include "net/gateway.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "net/dns_message.h"
#include "net/egress_log.h"
#include "net/sniff.h"
#include "util/error.h"

namespace vial::net {

using agent::FrameType;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kLookupTimeout = std::chrono::seconds(5);
constexpr size_t kReadChunk = 64 * 1024;
constexpr uint32_t kDnsTtl = 60;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string reason_json(const std::string& reason) { return nlohmann::json{{"reason", reason}}.dump(); }

tcp::endpoint endpoint_of(uint32_t ip, uint16_t port) { return {asio::ip::address_v4(ip), port}; }
}  // namespace

NetCounters& process_counters() {
  static NetCounters counters;
  return counters;
}

std::vector<tcp::acceptor> bind_published_ports(asio::any_io_executor ex, const std::vector<PortMapping>& ports) {
  std::vector<tcp::acceptor> out;
  for (const auto& p : ports) {
    tcp::acceptor a(ex);
    boost::system::error_code ec;
    auto ep = endpoint_of(p.host_ip, p.host_port);
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(64, ec);
    if (ec == asio::error::address_in_use) {
      throw Error(ErrorKind::conflict, "port " + ipv4_str(p.host_ip) + ":" + std::to_string(p.host_port) +
                                           " is already in use (-p " + p.str() + "): choose another host port");
    }
    if (ec) {
      throw Error(ErrorKind::invalid_input, "cannot listen on " + ipv4_str(p.host_ip) + ":" +
                                                std::to_string(p.host_port) + " (-p " + p.str() + "): " + ec.message());
    }
    out.push_back(std::move(a));
  }
  return out;
}

struct Gateway::Stream {
  explicit Stream(asio::any_io_executor ex) : sock(ex), timer(ex) {}
  uint32_t id = 0;
  bool inbound = false;  // a published port's client (tcp-in)
  tcp::socket sock;
  asio::steady_timer timer;  // the connect deadline
  uint32_t ip = 0;           // outbound: where the guest connected; inbound: the client
  uint16_t port = 0;         // outbound: the destination port; inbound: the guest port
  std::string name;          // the SNI or Host it presented, else a name that resolved to ip
  std::string rule;
  bool allowed = true;  // false once a name on the wire was refused
  bool opened = false;
  bool ended = false;
  // guest -> socket
  bool sniffing = false;
  std::string held;  // the guest's first bytes while sniffing
  std::string queue;
  std::string writing_buf;
  bool writing = false;
  bool guest_eof = false;
  bool shut = false;
  // socket -> guest
  std::string read_buf;
  bool reading = false;
  bool sock_eof = false;
  uint64_t in_flight = 0;
  uint64_t up = 0, down = 0;
};

std::shared_ptr<Gateway> Gateway::create(asio::any_io_executor ex, NetPolicy policy, GatewayIdentity who,
                                          std::vector<tcp::acceptor> listeners) {
  return std::shared_ptr<Gateway>(new Gateway(std::move(ex), std::move(policy), std::move(who), std::move(listeners)));
}

Gateway::Gateway(asio::any_io_executor ex, NetPolicy policy, GatewayIdentity who, std::vector<tcp::acceptor> listeners)
    : ex_(std::move(ex)),
      engine_(policy, host_ipv4_addresses()),
      who_(std::move(who)),
      listeners_(std::move(listeners)),
      ports_(policy.ports) {}

Gateway::~Gateway() { close(); }

void Gateway::start(SendFrame send) {
  send_ = std::move(send);
  for (size_t i = 0; i < listeners_.size() && i < ports_.size(); ++i) accept_on(i);
}

void Gateway::send(FrameType type, uint32_t id, std::string_view payload) {
  if (!closed_ && send_) send_(type, id, payload);
}

void Gateway::count(bool allowed, bool dns) {
  auto& c = process_counters();
  (allowed ? allowed_ : denied_)++;
  if (dns)
    (allowed ? c.dns_allowed : c.dns_denied)++;
  else
    (allowed ? c.tcp_allowed : c.tcp_denied)++;
}

void Gateway::close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  for (auto& l : listeners_) l.close(ec);
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) {
    if (!s->ended && s->opened) {
      s->rule += s->rule.empty() ? "vm-gone" : "; ended with the VM";
      log_stream(*s);
    }
    s->ended = true;
    s->sock.close(ec);
    s->timer.cancel();
  }
}

bool Gateway::handle(const agent::Frame& f) {
  if (!agent::is_net_type(f.type)) return false;
  if (closed_) return true;
  const bool from_guest_side = (f.request_id & agent::kGuestStreamBit) != 0;
  if (f.type == FrameType::dns) {
    if (from_guest_side) on_dns(f.request_id, f.payload);
    return true;
  }
  if (f.type == FrameType::net_open) {
    if (from_guest_side) on_open(f.request_id, f.payload);
    return true;
  }
  auto it = streams_.find(f.request_id);
  if (it == streams_.end()) return true;  // ended meanwhile
  StreamPtr s = it->second;
  switch (f.type) {
    case FrameType::net_opened:
      if (s->inbound && !s->opened) {
        s->opened = true;
        pump_read(s);
        pump_write(s);
      }
      break;
    case FrameType::net_data:
      if (s->opened) on_data(s, f.payload);
      break;
    case FrameType::net_ack: {
      uint64_t n = 0;
      try {
        n = agent::parse_body<agent::NetAckBody>(f.payload).bytes;
      } catch (const std::exception&) {
      }
      s->in_flight -= std::min(n, s->in_flight);
      pump_read(s);
      break;
    }
    case FrameType::net_eof:
      s->guest_eof = true;
      if (s->sniffing) sniff_and_decide(s, true);
      if (!s->ended) pump_write(s);
      break;
    case FrameType::net_close: {
      // The guest's reason (a published port's connect that failed in the guest) is logged.
      std::string reason = "closed by the guest";
      auto j = nlohmann::json::parse(f.payload, nullptr, false);
      if (j.is_object() && j.contains("reason") && j["reason"].is_string())
        reason += ": " + j["reason"].get<std::string>().substr(0, 200);
      end(s, reason, false);
      break;
    }
    default:
      break;
  }
  return true;
}

// ---- DNS ----

void Gateway::log_dns(const std::string& name, const std::vector<uint32_t>& addresses, bool allowed,
                      const std::string& rule) {
  count(allowed, true);
  EgressEvent e = event("dns");
  e.name = name;
  for (uint32_t a : addresses) e.address += (e.address.empty() ? "" : ",") + ipv4_str(a);
  e.port = 53;
  e.allowed = allowed;
  e.rule = rule;
  append_egress_event(e);
}

void Gateway::on_dns(uint32_t id, const std::string& packet) {
  auto query = parse_dns_query(packet);
  if (!query) {
    std::string reply = build_dns_error(packet, DnsRcode::formerr);
    if (!reply.empty()) send(FrameType::dns, id, reply);
    return;
  }
  Verdict v = engine_.resolve(query->name);
  if (!v.allowed) {
    log_dns(query->name, {}, false, v.rule);
    send(FrameType::dns, id, build_dns_reply(packet, *query, DnsRcode::nxdomain));
    return;
  }
  // Only IPv4 leaves the guest: other types of an allowed name get an empty answer.
  if (query->qtype != kDnsTypeA || query->qclass != kDnsClassIN) {
    send(FrameType::dns, id, build_dns_reply(packet, *query, DnsRcode::noerror));
    return;
  }
  if (auto fixed = engine_.added_host(query->name)) {
    answer_dns(id, packet, query->name, query->qtype, {*fixed}, {});
    return;
  }
  if (lookups_ >= kMaxLookups) {
    send(FrameType::dns, id, build_dns_reply(packet, *query, DnsRcode::servfail));
    return;
  }
  ++lookups_;
  auto resolver = std::make_shared<tcp::resolver>(ex_);
  auto timer = std::make_shared<asio::steady_timer>(ex_, kLookupTimeout);
  timer->async_wait([resolver](boost::system::error_code ec) {
    if (!ec) resolver->cancel();
  });
  resolver->async_resolve(
      tcp::v4(), query->name, "",
      [self = shared_from_this(), id, packet, name = query->name, qtype = query->qtype, resolver, timer](
          boost::system::error_code ec, tcp::resolver::results_type results) {
        timer->cancel();
        --self->lookups_;
        if (self->closed_) return;
        std::vector<uint32_t> addresses;
        for (const auto& r : results) {
          uint32_t a = r.endpoint().address().to_v4().to_uint();
          if (std::find(addresses.begin(), addresses.end(), a) == addresses.end()) addresses.push_back(a);
        }
        std::string failure;
        if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again)
          failure = "nxdomain";
        else if (ec)
          failure = "lookup failed: " + ec.message();
        self->answer_dns(id, packet, name, qtype, addresses, failure);
      });
}

void Gateway::answer_dns(uint32_t id, const std::string& packet, const std::string& name, uint16_t,
                         const std::vector<uint32_t>& addresses, const std::string& failure) {
  auto query = parse_dns_query(packet);
  if (!query) return;
  Verdict v = engine_.resolve(name);
  if (!failure.empty()) {
    log_dns(name, {}, true, v.rule + "; " + failure);
    send(FrameType::dns, id,
         build_dns_reply(packet, *query, failure == "nxdomain" ? DnsRcode::nxdomain : DnsRcode::servfail));
    return;
  }
  std::vector<uint32_t> dropped;
  auto kept = engine_.admit_answers(name, addresses, &dropped);
  if (kept.empty() && !dropped.empty()) {
    // Every address is one the guest may not reach (DNS rebinding into a blocked range).
    auto range = blocked_range(dropped.front());
    log_dns(name, dropped, false, "blocked " + (range ? *range : std::string("host-address")));
    send(FrameType::dns, id, build_dns_reply(packet, *query, DnsRcode::nxdomain));
    return;
  }
  log_dns(name, kept, true, v.rule);
  send(FrameType::dns, id, build_dns_reply(packet, *query, DnsRcode::noerror, kept, kDnsTtl));
}

// ---- TCP ----

EgressEvent Gateway::event(const char* proto) const {
  EgressEvent e;
  e.time_ms = unix_ms();
  e.vm = who_.vm;
  e.machine = who_.machine;
  e.proto = proto;
  return e;
}

void Gateway::log_stream(const Stream& s) {
  EgressEvent e = event(s.inbound ? "tcp-in" : "tcp");
  e.name = s.name;
  e.address = ipv4_str(s.ip);
  e.port = s.port;
  e.allowed = s.allowed;
  e.rule = s.rule;
  e.bytes_up = s.up;
  e.bytes_down = s.down;
  append_egress_event(e);
}

void Gateway::end(const StreamPtr& s, const std::string& reason, bool tell_guest) {
  if (s->ended) return;
  s->ended = true;
  boost::system::error_code ec;
  s->sock.close(ec);
  s->timer.cancel();
  streams_.erase(s->id);
  // The reason joins the rule in the log unless it only repeats it (a policy refusal).
  if (!reason.empty() && reason != "closed by the guest" && reason.find(s->rule) == std::string::npos)
    s->rule += "; " + reason;
  log_stream(*s);
  if (tell_guest) send(FrameType::net_close, s->id, reason_json(reason));
}

void Gateway::on_open(uint32_t id, const std::string& payload) {
  agent::NetOpenBody body;
  std::optional<uint32_t> ip;
  try {
    body = agent::parse_body<agent::NetOpenBody>(payload);
    ip = parse_ipv4(body.ip);
  } catch (const std::exception&) {
  }
  if (!ip || streams_.count(id)) {
    send(FrameType::net_close, id, reason_json("bad net_open"));
    return;
  }
  Verdict v = engine_.connect(*ip, body.port);
  if (v.allowed && streams_.size() >= kMaxConnections) v = Verdict{false, "connection-limit"};
  auto names = engine_.names_for(*ip);
  if (!v.allowed) {
    count(false, false);
    EgressEvent e = event("tcp");
    e.name = names.empty() ? "" : *names.begin();
    e.address = body.ip;
    e.port = body.port;
    e.rule = v.rule;
    append_egress_event(e);
    send(FrameType::net_close, id, reason_json("refused by vial's network policy: " + v.rule));
    return;
  }
  count(true, false);
  auto s = std::make_shared<Stream>(ex_);
  s->id = id;
  s->ip = *ip;
  s->port = body.port;
  s->rule = v.rule;
  s->name = names.empty() ? "" : *names.begin();
  s->sniffing = engine_.policy().has_allowlist();
  streams_[id] = s;
  s->timer.expires_after(kConnectTimeout);
  s->timer.async_wait([s](boost::system::error_code ec) {
    if (!ec && !s->opened) {
      boost::system::error_code ignored;
      s->sock.close(ignored);
    }
  });
  s->sock.async_connect(endpoint_of(*ip, body.port), [self = shared_from_this(), s](boost::system::error_code ec) {
    s->timer.cancel();
    if (s->ended) return;
    if (ec) {
      self->end(s, "connect failed: " + (ec == asio::error::operation_aborted ? std::string("timed out") : ec.message()),
                true);
      return;
    }
    s->opened = true;
    self->send(FrameType::net_opened, s->id, {});
    self->pump_read(s);
    self->pump_write(s);
  });
}

void Gateway::accept_on(size_t index) {
  auto sock = std::make_shared<tcp::socket>(ex_);
  listeners_[index].async_accept(*sock, [self = shared_from_this(), index, sock](boost::system::error_code ec) {
    if (self->closed_ || ec == asio::error::operation_aborted) return;
    if (!ec) {
      if (self->streams_.size() >= kMaxConnections) {
        boost::system::error_code ignored;
        sock->close(ignored);
      } else {
        auto s = std::make_shared<Stream>(self->ex_);
        s->sock = std::move(*sock);
        s->inbound = true;
        s->id = self->next_inbound_id_++ & ~agent::kGuestStreamBit;
        boost::system::error_code peer_ec;
        auto peer = s->sock.remote_endpoint(peer_ec);
        s->ip = peer_ec ? 0 : peer.address().to_v4().to_uint();
        s->port = self->ports_[index].guest_port;
        s->rule = "port " + self->ports_[index].str();
        self->streams_[s->id] = s;
        self->count(true, false);
        nlohmann::json j = agent::NetOpenBody{{}, s->port};
        self->send(FrameType::net_open, s->id, j.dump());
      }
    }
    self->accept_on(index);  // EMFILE and friends: keep serving; the client saw its failure
  });
}

void Gateway::on_data(const StreamPtr& s, const std::string& data) {
  if (s->sniffing) {
    s->held += data;
    sniff_and_decide(s, false);
    return;
  }
  // A guest may not have more than its window in flight: one that does is broken or hostile.
  if (s->queue.size() + data.size() > 2 * agent::kNetWindow) {
    end(s, "the guest overran its window", true);
    return;
  }
  s->queue += data;
  pump_write(s);
}

void Gateway::sniff_and_decide(const StreamPtr& s, bool final) {
  Sniffed r = sniff(s->held);
  if (r.kind == Sniff::need_more && !final && s->held.size() < kMaxSniff) return;
  s->sniffing = false;
  if ((r.kind == Sniff::tls || r.kind == Sniff::http) && !r.name.empty()) {
    Verdict v = engine_.name_on_wire(s->ip, r.name, r.kind == Sniff::tls);
    s->name = r.name;
    if (!v.allowed) {
      s->rule = v.rule;
      s->allowed = false;
      count(false, false);
      end(s, "refused by vial's network policy: " + v.rule, true);
      return;
    }
  }
  s->queue = std::move(s->held);
  s->held.clear();
  pump_write(s);
}

void Gateway::pump_read(const StreamPtr& s) {
  if (s->ended || s->reading || s->sock_eof || !s->opened || s->in_flight >= agent::kNetWindow) return;
  s->reading = true;
  s->read_buf.resize(static_cast<size_t>(std::min<uint64_t>(kReadChunk, agent::kNetWindow - s->in_flight)));
  s->sock.async_read_some(asio::buffer(s->read_buf), [self = shared_from_this(), s](boost::system::error_code ec,
                                                                                      size_t n) {
    s->reading = false;
    if (s->ended) return;
    if (ec == asio::error::eof) {
      s->sock_eof = true;
      self->send(FrameType::net_eof, s->id, {});
      self->finish_if_done(s);
      return;
    }
    if (ec) {
      self->end(s, ec.message(), true);
      return;
    }
    s->in_flight += n;
    s->down += n;
    process_counters().bytes_down += n;
    self->send(FrameType::net_data, s->id, std::string_view(s->read_buf.data(), n));
    self->pump_read(s);
  });
}

void Gateway::pump_write(const StreamPtr& s) {
  if (s->ended || s->writing) return;
  if (s->queue.empty()) {
    if (s->guest_eof && !s->sniffing && !s->shut && s->opened) {
      boost::system::error_code ec;
      s->sock.shutdown(tcp::socket::shutdown_send, ec);
      s->shut = true;
    }
    finish_if_done(s);
    return;
  }
  s->writing = true;
  s->writing_buf = std::move(s->queue);
  s->queue.clear();
  asio::async_write(s->sock, asio::buffer(s->writing_buf), [self = shared_from_this(), s](
                                                              boost::system::error_code ec, size_t n) {
    s->writing = false;
    if (s->ended) return;
    if (ec) {
      self->end(s, ec.message(), true);
      return;
    }
    s->up += n;
    process_counters().bytes_up += n;
    nlohmann::json j = agent::NetAckBody{n};
    self->send(FrameType::net_ack, s->id, j.dump());
    self->pump_write(s);
  });
}

void Gateway::finish_if_done(const StreamPtr& s) {
  if (s->sock_eof && s->shut && !s->writing) end(s, {}, false);
}

}  // namespace vial::net
