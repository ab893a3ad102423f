#include "guest/server.h"

#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <time.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "guest/util.h"

#ifndef VIAL_VERSION
#define VIAL_VERSION "0.0.0"
#endif

namespace vial::guest {

using agent::FrameType;

namespace {
// Stop reading program output while this much is waiting for the host (backpressure).
constexpr size_t kOutHighWater = 8u << 20;
// After the main process exits, background processes get this long to release the pipes.
constexpr int64_t kGraceMs = 100;
// Retry period while the host side of the port is disconnected (POLLHUP would spin).
constexpr int kReconnectPollMs = 20;
}  // namespace

Server::Server(ExecConfig cfg) : cfg_(std::move(cfg)) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  sigfd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  signal(SIGPIPE, SIG_IGN);
}

Server::~Server() {
  if (sigfd_ >= 0) close(sigfd_);
}

void Server::serve_connection(int fd) { loop(fd, Mode::connection); }

void Server::serve_port(int fd) {
  for (;;) loop(fd, Mode::port);
}

void Server::send(FrameType t, uint32_t id, std::string_view payload) {
  if (!connected_) return;
  agent::append_frame(out_, t, id, payload);
}

void Server::send_error(uint32_t id, const std::string& code, const std::string& message) {
  nlohmann::json j = agent::ErrorBody{code, message};
  send(FrameType::error, id, j.dump());
}

void Server::flush() {
  while (connected_ && out_off_ < out_.size()) {
    ssize_t n = write(fd_, out_.data() + out_off_, out_.size() - out_off_);
    if (n > 0) {
      out_off_ += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      break;
    } else {
      disconnect();
      return;
    }
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (1u << 20)) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
}

void Server::disconnect() {
  // Nobody is listening for the output any more: end every exec.
  connected_ = false;
  out_.clear();
  out_off_ = 0;
  decoder_ = agent::FrameDecoder();
  for (auto& [id, ex] : execs_) ex->kill_all();
  net_.reset();
}

void Server::reap() {
  signalfd_siginfo si;
  while (read(sigfd_, &si, sizeof si) > 0) {
  }
  // Reap everything: as PID 1 we also inherit orphans, whose status nobody wants.
  for (;;) {
    int st = 0;
    rusage ru{};
    pid_t pid = wait4(-1, &st, WNOHANG, &ru);
    if (pid <= 0) break;
    int64_t now = now_ms();
    if (cfg_.warm && cfg_.warm->on_reaped(pid)) continue;
    if (cfg_.sessions) cfg_.sessions->on_reaped(pid, st);
    for (auto& [id, ex] : execs_) {
      if (ex->pid == pid && !ex->exited_) {
        ex->on_exit(st, ru, now);
        if (!ex->done()) ex->grace_ms = now + kGraceMs;
        break;
      }
    }
  }
  if (cfg_.cgroups) cfg_.cgroups->retry_removals();
}

void Server::read_pipe(Exec& ex, bool is_err) {
  int& fd = is_err ? ex.err_fd : ex.out_fd;
  static std::string buf(agent::kChunkSize, '\0');
  ssize_t n = read(fd, buf.data(), buf.size());
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    close(fd);
    fd = -1;
    return;
  }
  uint64_t& seen = is_err ? ex.err_bytes : ex.out_bytes;
  uint64_t limit = is_err ? ex.err_limit : ex.out_limit;
  // Past the cap the pipe is still drained, so the program never blocks on a full pipe.
  uint64_t allowed = seen >= limit ? 0 : limit - seen;
  size_t fwd = static_cast<size_t>(std::min<uint64_t>(allowed, static_cast<uint64_t>(n)));
  seen += static_cast<uint64_t>(n);
  if (fwd > 0)
    send(is_err ? FrameType::stderr_ : FrameType::stdout_, ex.id, std::string_view(buf.data(), fwd));
}

void Server::write_stdin(Exec& ex) {
  // An offset instead of erasing the front: a big upload is written a pipe's worth at a time.
  while (ex.in_fd >= 0 && ex.stdin_off < ex.stdin_buf.size()) {
    ssize_t n = write(ex.in_fd, ex.stdin_buf.data() + ex.stdin_off, ex.stdin_buf.size() - ex.stdin_off);
    if (n > 0) {
      ex.stdin_off += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else {
      ex.close_stdin();  // EPIPE: the program closed its stdin; drop the rest
      return;
    }
  }
  if (ex.stdin_off == ex.stdin_buf.size()) {
    ex.stdin_buf.clear();
    ex.stdin_off = 0;
  }
  if (ex.in_fd >= 0 && ex.stdin_eof && ex.stdin_buf.empty()) ex.close_stdin();
}

void Server::handle_exec(uint32_t id, const std::string& payload) {
  if (execs_.count(id)) {
    send_error(id, "busy", "request id " + std::to_string(id) + " is already running");
    return;
  }
  agent::ExecRequest req;
  try {
    req = agent::parse_body<agent::ExecRequest>(payload);
  } catch (const std::exception& e) {
    send_error(id, "bad_request", e.what());
    return;
  }
  if (!req.session.empty() && cfg_.sessions && cfg_.sessions->busy(req.session)) {
    send_error(id, "busy", "session " + req.session + " is running another exec: one at a time");
    return;
  }
  std::string error;
  auto ex = Exec::spawn(id, req, cfg_, error);
  if (!ex) {
    send_error(id, "spawn_failed", error);
    return;
  }
  execs_[id] = std::move(ex);
}

void Server::handle_reseed(uint32_t id, const std::string& payload) {
  agent::ReseedBody body;
  try {
    body = agent::parse_body<agent::ReseedBody>(payload);
  } catch (const std::exception& e) {
    send_error(id, "bad_request", e.what());
    return;
  }
  std::string problems;
  auto problem = [&](const std::string& what) {
    if (!problems.empty()) problems += "; ";
    problems += what + ": " + strerror(errno);
  };
  // Only as PID 1: in local mode the "guest" is the host, whose RNG and clock are not ours.
  if (cfg_.system) {
    int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      problem("open /dev/urandom");
    } else {
      // struct rand_pool_info ends in a flexible array: build it in an aligned buffer.
      alignas(rand_pool_info) unsigned char mem[sizeof(rand_pool_info) + agent::kReseedEntropyBytes];
      auto* info = reinterpret_cast<rand_pool_info*>(mem);
      info->entropy_count = static_cast<int>(agent::kReseedEntropyBytes * 8);
      info->buf_size = static_cast<int>(agent::kReseedEntropyBytes);
      std::memcpy(info->buf, body.entropy.data(), agent::kReseedEntropyBytes);
      if (ioctl(fd, RNDADDENTROPY, info) != 0) problem("RNDADDENTROPY");
      if (ioctl(fd, RNDRESEEDCRNG) != 0) problem("RNDRESEEDCRNG");
      std::memset(mem, 0, sizeof mem);
      close(fd);
    }
    if (body.realtime_ns) {
      timespec ts{static_cast<time_t>(*body.realtime_ns / 1000000000),
                  static_cast<long>(*body.realtime_ns % 1000000000)};
      if (clock_settime(CLOCK_REALTIME, &ts) != 0) problem("clock_settime");
    }
  }
  // After the kernel pool: the interpreters seed from it.
  if (cfg_.warm) {
    std::string err;
    if (!cfg_.warm->reseed_all(err)) {
      if (!problems.empty()) problems += "; ";
      problems += err;
    }
  }
  if (!problems.empty()) {
    send_error(id, "reseed_failed", problems);
    return;
  }
  if (finish_boot_) {
    // Fresh entropy and time are in: the rest of the boot (the root disk) may go ahead.
    auto finish = std::move(finish_boot_);
    finish_boot_ = nullptr;
    finish();
  }
  send(FrameType::ok, id, {});
}

void Server::handle_net_up(uint32_t id, const std::string& payload) {
  agent::NetUpBody body;
  try {
    body = agent::parse_body<agent::NetUpBody>(payload);
  } catch (const std::exception& e) {
    send_error(id, "bad_request", e.what());
    return;
  }
  // Only as PID 1: in local mode the "guest" is the host, whose network is not ours to steer.
  if (!cfg_.system) {
    send_error(id, "net_failed", "the network needs the agent to run as the guest's PID 1");
    return;
  }
  std::string error = net_.up(body, /*write_resolv_conf=*/true);
  if (!error.empty()) {
    send_error(id, "net_failed", "setting up the guest's network: " + error);
    return;
  }
  send(FrameType::ok, id, {});
}

void Server::handle_frame(agent::Frame& f) {
  const bool allowed_while_parked = f.type == FrameType::hello || f.type == FrameType::ping ||
                                    f.type == FrameType::reseed || f.type == FrameType::error;
  if (finish_boot_ && !allowed_while_parked) {
    send_error(f.request_id, "parked", "the guest is parked before its boot: send reseed first");
    return;
  }
  switch (f.type) {
    case FrameType::hello: {
      agent::HelloBody h;
      try {
        h = agent::parse_body<agent::HelloBody>(f.payload);
      } catch (const std::exception& e) {
        send_error(f.request_id, "bad_request", e.what());
        return;
      }
      if (h.version != agent::kProtocolVersion) {
        send_error(f.request_id, "version",
                   "host speaks protocol version " + std::to_string(h.version) +
                       ", agent speaks " + std::to_string(agent::kProtocolVersion));
        return;
      }
      utsname u{};
      uname(&u);
      agent::HelloBody reply;
      reply.agent = "vial-agent " VIAL_VERSION;
      reply.kernel = u.release;
      if (cfg_.warm) {
        reply.warm = cfg_.warm->ready_languages();
        reply.warming = cfg_.warm->available_languages();
      }
      reply.parked = static_cast<bool>(finish_boot_);
      nlohmann::json j = reply;
      send(FrameType::hello, f.request_id, j.dump());
      return;
    }
    case FrameType::ping:
      send(FrameType::pong, f.request_id, {});
      return;
    case FrameType::exec:
      handle_exec(f.request_id, f.payload);
      return;
    case FrameType::stdin_: {
      auto it = execs_.find(f.request_id);
      if (it == execs_.end()) {
        send_error(f.request_id, "unknown_request", "no running exec with this id");
        return;
      }
      Exec& ex = *it->second;
      if (ex.in_fd < 0) return;  // stdin already closed or never opened: drop the bytes
      if (f.payload.empty())
        ex.stdin_eof = true;
      else
        ex.stdin_buf += f.payload;
      write_stdin(ex);
      return;
    }
    case FrameType::kill: {
      auto it = execs_.find(f.request_id);
      if (it == execs_.end()) {
        send_error(f.request_id, "unknown_request", "no running exec with this id");
        return;
      }
      int sig = SIGKILL;
      if (!f.payload.empty()) {
        auto j = nlohmann::json::parse(f.payload, nullptr, false);
        if (j.is_discarded() || !j.is_object() ||
            (j.contains("signal") && !j["signal"].is_number_integer())) {
          send_error(f.request_id, "bad_request", "kill wants {\"signal\": N}");
          return;
        }
        if (j.contains("signal")) sig = j["signal"].get<int>();
      }
      if (sig < 1 || sig >= NSIG) {
        send_error(f.request_id, "bad_request", "bad signal number " + std::to_string(sig));
        return;
      }
      it->second->signal_all(sig);
      return;
    }
    case FrameType::reseed:
      handle_reseed(f.request_id, f.payload);
      return;
    case FrameType::net_up:
      handle_net_up(f.request_id, f.payload);
      return;
    case FrameType::error:
      return;  // the host reporting a problem with our frames: nothing to answer
    default:
      if (agent::is_net_type(f.type)) {
        net_.handle(f);
        return;
      }
      send_error(f.request_id, "bad_request",
                 "unexpected frame type " + std::string(agent::type_name(f.type)));
      return;
  }
}

void Server::finish_done() {
  for (auto it = execs_.begin(); it != execs_.end();) {
    Exec& ex = *it->second;
    if (!ex.done()) {
      ++it;
      continue;
    }
    nlohmann::json j = ex.result();
    send(FrameType::exit, ex.id, j.dump());
    it = execs_.erase(it);
  }
}

void Server::loop(int fd, Mode mode) {
  fd_ = fd;
  connected_ = true;
  set_nonblock(fd);
  decoder_ = agent::FrameDecoder();
  out_.clear();
  out_off_ = 0;
  int64_t next_reconnect_check = 0;

  std::vector<pollfd> pfds;
  struct Slot {
    Exec* ex;
    int kind;  // 0 stdout, 1 stderr, 2 stdin, 3 a cell's session control socket
  };
  std::vector<Slot> slots;
  std::string rbuf(64 * 1024, '\0');

  for (;;) {
    if (!connected_ && mode == Mode::connection && execs_.empty()) return;
    int64_t now = now_ms();
    int64_t wake = -1;
    auto at = [&](int64_t t) {
      if (wake < 0 || t < wake) wake = t;
    };
    for (auto& [id, ex] : execs_) {
      if (ex->deadline_pending()) at(ex->deadline_ms);
      if (ex->grace_ms >= 0) at(ex->grace_ms);
    }
    if (!connected_ && mode == Mode::port) at(next_reconnect_check);

    pfds.clear();
    slots.clear();
    pfds.push_back({sigfd_, POLLIN, 0});
    bool conn_polled = connected_;
    if (conn_polled) {
      short ev = POLLIN;
      if (out_off_ < out_.size()) ev |= POLLOUT;
      pfds.push_back({fd_, ev, 0});
    }
    size_t first_slot = pfds.size();
    bool backpressure = out_.size() - out_off_ > kOutHighWater;
    for (auto& [id, ex] : execs_) {
      if (!backpressure) {
        if (ex->out_fd >= 0) {
          pfds.push_back({ex->out_fd, POLLIN, 0});
          slots.push_back({ex.get(), 0});
        }
        if (ex->err_fd >= 0) {
          pfds.push_back({ex->err_fd, POLLIN, 0});
          slots.push_back({ex.get(), 1});
        }
      }
      if (ex->in_fd >= 0 && !ex->stdin_buf.empty()) {
        pfds.push_back({ex->in_fd, POLLOUT, 0});
        slots.push_back({ex.get(), 2});
      }
      if (ex->ctl_fd >= 0 && !ex->exited_) {
        pfds.push_back({ex->ctl_fd, POLLIN, 0});
        slots.push_back({ex.get(), 3});
      }
    }
    size_t first_net = pfds.size();
    net_.append_pollfds(pfds, backpressure || !connected_);
    size_t net_count = pfds.size() - first_net;
    int timeout = wake < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, wake - now));
    int r = poll(pfds.data(), pfds.size(), timeout);
    if (r < 0 && errno != EINTR) {
      console_log(std::string("poll: ") + strerror(errno));
      usleep(10000);
      continue;
    }
    if (r < 0) continue;

    if (pfds[0].revents) reap();

    // Host side of the channel.
    if (conn_polled) {
      short rev = pfds[1].revents;
      if (rev & POLLOUT) flush();
      if (connected_ && (rev & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = read(fd_, rbuf.data(), rbuf.size());
        if (n > 0) {
          decoder_.feed(std::string_view(rbuf.data(), static_cast<size_t>(n)));
          while (auto item = decoder_.next()) {
            if (item->error)
              send_error(item->error->request_id, "bad_frame", item->error->message);
            else
              handle_frame(*item->frame);
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          disconnect();
          next_reconnect_check = now_ms() + kReconnectPollMs;
        }
      }
    } else if (mode == Mode::port && now_ms() >= next_reconnect_check) {
      // Poll reports POLLHUP continuously while the host is away; peek at the port now and
      // then instead. No POLLHUP means the host is back.
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLERR))) {
        connected_ = true;
        decoder_ = agent::FrameDecoder();
      } else {
        next_reconnect_check = now_ms() + kReconnectPollMs;
      }
    }

    net_.on_events(pfds.data() + first_net, net_count, now_ms());

    for (size_t i = first_slot; i < first_net; ++i) {
      if (!pfds[i].revents) continue;
      Slot& s = slots[i - first_slot];
      if (s.kind == 3) {
        s.ex->read_cell_report(now_ms());
        if (s.ex->exited_ && !s.ex->done()) s.ex->grace_ms = now_ms() + kGraceMs;
      } else if (s.kind == 2) {
        write_stdin(*s.ex);
      } else {
        read_pipe(*s.ex, s.kind == 1);
      }
    }

    // Deadlines: the timeout kills the whole exec (interrupts a cell first); the grace ends
    // lingering background jobs.
    now = now_ms();
    for (auto& [id, ex] : execs_) {
      if (ex->deadline_pending() && now >= ex->deadline_ms) ex->on_deadline(now);
      if (ex->grace_ms >= 0 && now >= ex->grace_ms) {
        ex->grace_ms = -1;
        ex->kill_leftovers();
        // Take what is already buffered, then stop waiting for holders outside our reach.
        for (int k = 0; k < 64 && ex->out_fd >= 0; ++k) read_pipe(*ex, false);
        for (int k = 0; k < 64 && ex->err_fd >= 0; ++k) read_pipe(*ex, true);
        if (ex->out_fd >= 0) close(ex->out_fd);
        if (ex->err_fd >= 0) close(ex->err_fd);
        ex->out_fd = ex->err_fd = -1;
      }
    }
    finish_done();
    flush();
  }
}

}  // namespace vial::guest
