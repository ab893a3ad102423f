// The host half of a VM's network (issue 13): every DNS query and TCP connection of the guest
// arrives here as agent frames (guest/net.h) and is decided by the VM's PolicyEngine, resolved
// on the host, connected from the host, relayed with per-stream flow control, and logged
// (net/egress_log.h). Published ports (-p) are listeners here whose clients are relayed into
// the guest. The gateway lives in whichever process owns the VM's agent channel: the CLI or
// `vial serve` for sandboxes (vm/agent_client.h), the supervisor for machines.
//
// IMPORTANT: single-threaded; call it only on its executor (the agent channel's).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "agent/protocol.h"
#include "net/egress_log.h"
#include "net/policy.h"

namespace vial::net {

namespace asio = boost::asio;

// Connections (both ways) one VM may have open at once; more are refused and logged.
inline constexpr size_t kMaxConnections = 128;
// DNS lookups of one VM in flight on the host at once; more get SERVFAIL.
inline constexpr size_t kMaxLookups = 32;

struct GatewayIdentity {
  std::string vm;
  std::string machine;  // "" for sandboxes
};

// Totals of this process's gateways, for /metrics.
struct NetCounters {
  std::atomic<uint64_t> dns_allowed{0}, dns_denied{0}, tcp_allowed{0}, tcp_denied{0};
  std::atomic<uint64_t> bytes_up{0}, bytes_down{0};
};
NetCounters& process_counters();

// Binds a listener for each published port, failing before any VM starts when one is taken:
// Error(conflict) "port 127.0.0.1:8080 is already in use (-p 8080:80): ...".
std::vector<asio::ip::tcp::acceptor> bind_published_ports(asio::any_io_executor ex,
                                                          const std::vector<PortMapping>& ports);

class Gateway final : public std::enable_shared_from_this<Gateway> {
 public:
  using SendFrame = std::function<void(agent::FrameType, uint32_t, std::string_view)>;

  // `listeners` from bind_published_ports(policy.ports), in the same order.
  static std::shared_ptr<Gateway> create(asio::any_io_executor ex, NetPolicy policy, GatewayIdentity who,
                                         std::vector<asio::ip::tcp::acceptor> listeners = {});
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;
  ~Gateway();

  // Frames go to the guest through `send` from now on; published ports start accepting.
  void start(SendFrame send);
  // A frame from the guest: true when it was a network frame (handled), false otherwise.
  bool handle(const agent::Frame& frame);
  // The VM is going away: every socket closes, open connections are logged.
  void close();

  // This VM's decisions so far (for `vial run --json`).
  uint64_t allowed() const { return allowed_; }
  uint64_t denied() const { return denied_; }

 private:
  struct Stream;
  using StreamPtr = std::shared_ptr<Stream>;

  Gateway(asio::any_io_executor ex, NetPolicy policy, GatewayIdentity who,
          std::vector<asio::ip::tcp::acceptor> listeners);
  void send(agent::FrameType type, uint32_t id, std::string_view payload);
  void accept_on(size_t index);
  void on_dns(uint32_t id, const std::string& query);
  void answer_dns(uint32_t id, const std::string& packet, const std::string& name, uint16_t qtype,
                  const std::vector<uint32_t>& addresses, const std::string& failure);
  void on_open(uint32_t id, const std::string& payload);
  void on_data(const StreamPtr& s, const std::string& data);
  void sniff_and_decide(const StreamPtr& s, bool final);
  void pump_read(const StreamPtr& s);
  void pump_write(const StreamPtr& s);
  void finish_if_done(const StreamPtr& s);
  // Ends a stream: closes its socket, logs it, and tells the guest unless it told us.
  void end(const StreamPtr& s, const std::string& reason, bool tell_guest);
  void log_dns(const std::string& name, const std::vector<uint32_t>& addresses, bool allowed, const std::string& rule);
  void log_stream(const Stream& s);
  // An event of this VM, stamped now.
  EgressEvent event(const char* proto) const;
  void count(bool allowed, bool dns);

  asio::any_io_executor ex_;
  PolicyEngine engine_;
  GatewayIdentity who_;
  std::vector<asio::ip::tcp::acceptor> listeners_;
  std::vector<PortMapping> ports_;
  SendFrame send_;
  bool closed_ = false;
  std::map<uint32_t, StreamPtr> streams_;
  size_t lookups_ = 0;
  uint32_t next_inbound_id_ = 1;
  uint64_t allowed_ = 0;
  uint64_t denied_ = 0;
};

}  // namespace vial::net
