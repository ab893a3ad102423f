// The guest half of the network (issue 13): relays every TCP connection a guest program opens,
// and every DNS query it sends to 127.0.0.1:53, over the agent channel to the host, which
// decides, resolves and connects (net/gateway.h). Also connects the host's clients of
// published ports to 127.0.0.1:PORT in the guest. Nothing here decides anything: a guest is
// hostile, so the policy lives only on the host.
//
// Single threaded, driven by Server's poll loop: append_pollfds() adds this module's fds,
// on_events() handles their revents in the same order.
#pragma once

#include <netinet/in.h>
#include <poll.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/protocol.h"

namespace vial::guest {

class Net final {
 public:
  using Send = std::function<void(agent::FrameType, uint32_t, std::string_view)>;
  explicit Net(Send send) : send_(std::move(send)) {}
  ~Net();
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;

  // At boot (PID 1 only): the listener and the BPF program, attached but steering nothing, so
  // that templates and boot snapshots carry them. A failure is kept and reported by up().
  void prepare();
  // net_up: starts intercepting. "" on success, else what failed. Idempotent.
  std::string up(const agent::NetUpBody& body, bool write_resolv_conf);
  // A net_* or dns frame from the host.
  void handle(const agent::Frame& f);
  // The host went away: every stream and query ends.
  void reset();

  // `backpressure`: the channel to the host is full; don't read sockets now.
  void append_pollfds(std::vector<pollfd>& pfds, bool backpressure);
  void on_events(const pollfd* pfds, size_t n, int64_t now_ms);

 private:
  struct Stream {
    int fd = -1;
    bool connecting = false;    // h->g open: our connect() to 127.0.0.1:port is in progress
    bool opened = false;        // data may flow
    bool read_eof = false;      // our socket said EOF; net_eof sent
    bool peer_eof = false;      // the host sent net_eof
    bool shut_write = false;
    uint64_t in_flight = 0;     // sent to the host, not yet acknowledged
    std::string to_socket;      // from the host, not yet written
    size_t to_socket_off = 0;
  };
  struct Query {
    sockaddr_in from{};
    int64_t expires_ms = 0;
  };

  void accept_connections();
  void read_dns();
  void open_from_host(uint32_t id, const std::string& payload);
  void finish_connect(uint32_t id, Stream& s);
  void read_socket(uint32_t id, Stream& s);
  void write_socket(uint32_t id, Stream& s);
  // Drops the stream: with `reset`, the guest program sees a reset; with `tell_host`, a
  // net_close goes to the host.
  void drop(uint32_t id, bool reset, bool tell_host, const std::string& reason = {});
  void maybe_finish(uint32_t id, Stream& s);

  Send send_;
  std::string prepare_error_ = "not prepared";
  int map_ = -1;
  int listener_ = -1;
  int dns_ = -1;
  bool up_ = false;
  std::map<uint32_t, Stream> streams_;
  std::map<uint32_t, Query> queries_;
  uint32_t next_id_ = 1;
  // What append_pollfds added, in order.
  enum class Kind { listener, dns, stream };
  struct Polled {
    Kind kind;
    uint32_t id;
  };
  std::vector<Polled> polled_;
};

}  // namespace vial::guest
