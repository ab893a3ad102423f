// The protocol loop: one connection (virtio-serial port or unix socket), frames in, request
// dispatch, output streaming with backpressure, exec deadlines and child reaping. Single
// threaded; poll() over a handful of fds.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "agent/protocol.h"
#include "guest/exec.h"
#include "guest/net.h"

namespace vial::guest {

class Server final {
 public:
  // Blocks SIGCHLD and creates the signalfd; call before any fork.
  explicit Server(ExecConfig cfg);
  ~Server();

  // Serves `fd` until the peer hangs up, then kills the execs still running and returns.
  void serve_connection(int fd);
  // Serves a virtio-serial port forever: a host disconnect kills running execs, then the loop
  // waits (without spinning) for the host to reconnect.
  [[noreturn]] void serve_port(int fd);
  // Warm interpreters to fork python execs from (null: all execs start cold). Set after the
  // constructor so the zygotes start with SIGCHLD already routed to our signalfd.
  void set_warm(WarmInterpreters* warm) { cfg_.warm = warm; }
  // Parks the guest (see HelloBody::parked): until the host's first successful reseed, only
  // hello, ping and reseed are served; that reseed runs `finish_boot` before its `ok`.
  void park(std::function<void()> finish_boot) { finish_boot_ = std::move(finish_boot); }
  // PID 1 at boot: sets up what the network needs ahead of net_up (see Net::prepare).
  void prepare_network() { net_.prepare(); }

 private:
  enum class Mode { connection, port };
  // Returns when a connection-mode peer has gone and no exec is left.
  void loop(int fd, Mode mode);
  void handle_frame(agent::Frame& f);
  void handle_exec(uint32_t id, const std::string& payload);
  void handle_reseed(uint32_t id, const std::string& payload);
  void handle_net_up(uint32_t id, const std::string& payload);
  void send(agent::FrameType t, uint32_t id, std::string_view payload);
  void send_error(uint32_t id, const std::string& code, const std::string& message);
  void flush();
  void disconnect();
  void reap();
  void read_pipe(Exec& ex, bool is_err);
  void write_stdin(Exec& ex);
  void finish_done();

  ExecConfig cfg_;
  std::function<void()> finish_boot_;  // set while parked
  int sigfd_ = -1;
  int fd_ = -1;
  bool connected_ = false;
  std::string out_;
  size_t out_off_ = 0;
  agent::FrameDecoder decoder_;
  std::map<uint32_t, std::unique_ptr<Exec>> execs_;
  Net net_{[this](agent::FrameType t, uint32_t id, std::string_view payload) { send(t, id, payload); }};
};

}  // namespace vial::guest
