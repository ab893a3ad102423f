#include "bench/net_bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include <boost/asio/this_coro.hpp>

#include "bench/bench_report.h"
#include "sandbox/vm_manager.h"
#include "util/error.h"
#include "util/event_loop.h"
#include "util/process.h"

namespace vial::bench {
namespace {

using Clock = std::chrono::steady_clock;
// 127.0.0.1 in a guest is the guest's own loopback: the host's server listens beside it.
constexpr uint32_t kServerAddress = 0x7f000002;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// A blocking HTTP/1.0 responder on 127.0.0.2: "GET /N" answers N bytes. One thread per
// connection; stopped by closing the listener.
class ByteServer {
 public:
  ByteServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(kServerAddress);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 128) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw_errno("bench server on 127.0.0.1", errno);
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~ByteServer() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto& t : workers_) t.join();
  }
  uint16_t port() const { return port_; }

 private:
  void accept_loop() {
    while (!stopping_) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      workers_.emplace_back([c] { serve(c); });
    }
  }
  static void serve(int c) {
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 8192) {
      ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    uint64_t size = 0;
    if (head.starts_with("GET /")) size = std::strtoull(head.c_str() + 5, nullptr, 10);
    std::string reply = "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n";
    bool ok = ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(reply.size());
    static const std::string chunk(1 << 20, 'v');
    while (ok && size > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(size, chunk.size()));
      ssize_t w = ::send(c, chunk.data(), n, MSG_NOSIGNAL);
      ok = w > 0;
      if (ok) size -= static_cast<uint64_t>(w);
    }
    ::close(c);
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::vector<std::thread> workers_;
};

// Runs in the guest (and, for the download, on the host): prints one JSON line.
std::string probe_code(const std::string& host, uint16_t port, int count, int mib, bool download_only) {
  return "import json, socket, time\n"
         "H, P, N, MIB = '" + host + "', " + std::to_string(port) + ", " + std::to_string(count) + ", " +
         std::to_string(mib) + "\n"
         "out = {'connect': [], 'dns': []}\n"
         "if not " + (download_only ? "True" : "False") + ":\n"
         "    ip = socket.gethostbyname(H)\n"
         "    for _ in range(N):\n"
         "        t = time.perf_counter(); s = socket.create_connection((ip, P)); s.sendall(b'GET /1 HTTP/1.0\\r\\n\\r\\n')\n"
         "        while s.recv(4096): pass\n"
         "        out['connect'].append((time.perf_counter() - t) * 1000); s.close()\n"
         "    for _ in range(N):\n"
         "        t = time.perf_counter(); socket.getaddrinfo(H, P, socket.AF_INET); out['dns'].append((time.perf_counter() - t) * 1000)\n"
         "s = socket.create_connection((socket.gethostbyname(H), P)); s.sendall(b'GET /%d HTTP/1.0\\r\\n\\r\\n' % (MIB << 20))\n"
         "t = time.perf_counter(); n = 0\n"
         "while True:\n"
         "    b = s.recv(1 << 20)\n"
         "    if not b: break\n"
         "    n += len(b)\n"
         "out['mib_s'] = n / (1 << 20) / (time.perf_counter() - t)\n"
         "print(json.dumps(out))\n";
}

nlohmann::json parse_probe(const std::string& out, const std::string& where) {
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(ErrorKind::internal, "the " + where + " probe printed: " + out);
  return j;
}

}  // namespace

nlohmann::json bench_net(const NetBenchOptions& o) {
  if (o.count < 1) throw Error(ErrorKind::invalid_input, "--count must be at least 1");
  if (o.download_mib < 1) throw Error(ErrorKind::invalid_input, "--mib must be at least 1");
  ByteServer server;
  const std::string name = "bench.test";
  net::NetOptions flags;
  flags.allow_hosts = {name};
  flags.add_hosts = {name + ":127.0.0.2"};
  flags.allow_cidrs = {"127.0.0.2/32"};
  const net::NetPolicy policy = net::make_policy(flags);

  BenchReport report("net", o.accel.name());
  run_with_signals([&]() -> asio::awaitable<void> {
    VmManagerSettings s;
    s.accel = o.accel;
    s.max_concurrent_vms = 2;
    auto manager = VmManager::create(co_await asio::this_coro::executor, s);
    co_await manager->start();
    manager->destroy_vm(co_await manager->create_vm("python", "bench", "template-build"));  // not timed

    // Turn about, so a drift of the host's speed hits both cases alike.
    std::vector<double> plain, networked;
    for (int i = 0; i < o.count; ++i) {
      auto start = Clock::now();
      auto vm = co_await manager->create_vm("python", "bench", "plain");
      plain.push_back(ms_since(start));
      manager->destroy_vm(vm);
      start = Clock::now();
      vm = co_await manager->create_vm("python", "bench", "net");
      co_await vm->enable_network(policy);
      networked.push_back(ms_since(start));
      manager->destroy_vm(vm);
      std::fprintf(stderr, "restore %d/%d: %.1f ms plain, %.1f ms with a network\n", i + 1, o.count, plain.back(),
                   networked.back());
    }
    report.add_case("restore_plain", plain);
    report.add_case("restore_net", networked);
    report.add_value("restore_net_ratio", summarize(networked).p50_ms / summarize(plain).p50_ms);

    auto vm = co_await manager->create_vm("python", "bench", "probe");
    co_await vm->enable_network(policy);
    RunRequest probe;
    probe.language = "python";
    probe.code = probe_code(name, server.port(), o.count, o.download_mib, false);
    probe.timeout = std::chrono::seconds(600);
    std::fprintf(stderr, "probing from the guest: %d connects, %d lookups, %d MiB...\n", o.count, o.count,
                 o.download_mib);
    RunResult r = co_await vm->execute(probe, {});
    manager->destroy_vm(vm);
    if (r.exit_code != 0) throw Error(ErrorKind::internal, "the guest probe failed: " + r.stderr_data);
    auto guest = parse_probe(r.stdout_data, "guest");
    report.add_case("connect", guest["connect"].get<std::vector<double>>());
    report.add_case("dns", guest["dns"].get<std::vector<double>>());
    report.add_value("download_mib_s", guest["mib_s"].get<double>());
    manager->stop();
  });

  // The yardstick: the same download by the host's python3, straight from the server.
  std::fprintf(stderr, "the same download on the host...\n");
  const std::string host_code = probe_code("127.0.0.2", server.port(), o.count, o.download_mib, true);
  CaptureResult host = run_capture({"python3", "-c", host_code}, std::chrono::seconds(600));
  if (host.exit_code != 0) throw Error(ErrorKind::internal, "the host probe failed: " + host.output);
  report.add_value("host_download_mib_s", parse_probe(host.output, "host")["mib_s"].get<double>());
  return report.to_json();
}

}  // namespace vial::bench
