#include "bench/server_bench.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <thread>

#include "bench/bench_report.h"
#include "server/daemon_client.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"

namespace vial::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }

// A `vial serve` of this bench's own, stopped (SIGTERM, then killed) when it goes out of scope.
class BenchServer final {
 public:
  explicit BenchServer(const ServerBenchOptions& o)
      : socket_(run_dir() / ("bench-" + std::to_string(::getpid()) + ".sock")),
        log_(run_dir() / ("bench-" + std::to_string(::getpid()) + ".log")) {
    fs::create_directories(run_dir());
    SpawnOptions spawn;
    spawn.output_path = log_;
    child_ = Child::spawn({(self_dir() / "vial").string(), "serve", "--socket", socket_.string(), "--pool",
                           "python=" + std::to_string(o.pool), "--max-vms", std::to_string(o.max_vms)},
                          spawn);
  }
  ~BenchServer() {
    child_.signal(SIGTERM);
    for (int i = 0; i < 300 && child_.running(); ++i) {
      if (!child_.try_wait()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    child_.kill_and_reap();
    std::error_code ec;
    if (ok_) fs::remove(log_, ec);
  }
  BenchServer(const BenchServer&) = delete;
  BenchServer& operator=(const BenchServer&) = delete;

  const fs::path& socket() const { return socket_; }
  void succeeded() { ok_ = true; }

  // Polls /healthz until the pool holds `pool` python VMs; returns the health object.
  nlohmann::json wait_for_pool(unsigned pool, std::chrono::seconds limit) {
    const auto until = Clock::now() + limit;
    std::string last = "no answer";
    while (Clock::now() < until) {
      if (child_.try_wait()) {
        throw Error(ErrorKind::internal, "the bench's vial serve exited; its log is " + log_.string());
      }
      try {
        auto health = server::DaemonClient(socket_).call_json("GET", "/healthz");
        if (health["warm_pool"].value("python", 0u) >= pool) return health;
        last = health.dump();
      } catch (const std::exception& e) {
        last = e.what();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw Error(ErrorKind::timeout, "the bench's vial serve did not fill its warm pool (" + last + "); its log is " +
                                        log_.string());
  }

 private:
  fs::path socket_;
  fs::path log_;
  Child child_;
  bool ok_ = false;
};

// One `vial run` through the server, timed from spawn to exit.
double cli_run_once(const fs::path& socket) {
  const auto t0 = Clock::now();
  CaptureResult r = run_capture({(self_dir() / "vial").string(), "run", "--socket", socket.string(), "-l", "python",
                                 "-c", "print(1)"},
                                std::chrono::seconds(120));
  const double ms = ms_since(t0);
  if (r.exit_code != 0 || r.output != "1\n") {
    throw Error(ErrorKind::internal, "vial run through the server failed (exit " + std::to_string(r.exit_code) +
                                         "): " + r.output);
  }
  return ms;
}

struct LoadResult {
  std::vector<double> latencies_ms;
  unsigned errors = 0;
  std::string first_error;
  double seconds = 0;
};

// `clients` threads, each posting /v1/run back to back until the deadline.
LoadResult load(const fs::path& socket, int clients, std::chrono::seconds length) {
  std::vector<std::vector<double>> per_client(static_cast<size_t>(clients));
  std::atomic<unsigned> errors{0};
  std::mutex first_error_mutex;
  std::string first_error;
  auto failed = [&](const std::string& what) {
    if (errors++ == 0) {
      std::lock_guard lock(first_error_mutex);
      first_error = what;
    }
  };
  const auto start = Clock::now();
  const auto until = start + length;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      server::DaemonClient client(socket);
      const nlohmann::json body = {{"language", "python"}, {"code", "print(1)"}};
      while (Clock::now() < until) {
        const auto t0 = Clock::now();
        try {
          auto r = client.call_json("POST", "/v1/run", body);
          if (r.value("stdout", "") == "1\n") {
            per_client[static_cast<size_t>(c)].push_back(ms_since(t0));
          } else {
            failed("unexpected result: " + r.dump());
          }
        } catch (const std::exception& e) {
          failed(e.what());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  LoadResult result;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.errors = errors;
  result.first_error = first_error;
  for (const auto& v : per_client) result.latencies_ms.insert(result.latencies_ms.end(), v.begin(), v.end());
  return result;
}

}  // namespace

nlohmann::json bench_server(const ServerBenchOptions& o) {
  if (o.count < 1 || o.clients < 1 || o.seconds < 1 || o.pool < 1) {
    throw Error(ErrorKind::invalid_input, "--count, --clients, --seconds and --pool must be at least 1");
  }
  std::fprintf(stderr, "starting vial serve with %u warm python VMs...\n", o.pool);
  BenchServer server(o);
  auto health = server.wait_for_pool(o.pool, std::chrono::seconds(300));
  std::vector<double> cli_run;
  for (int i = 0; i < o.count; ++i) {
    server.wait_for_pool(o.pool, std::chrono::seconds(120));
    cli_run.push_back(cli_run_once(server.socket()));
    std::fprintf(stderr, "cli_run %d/%d: %.1f ms\n", i + 1, o.count, cli_run.back());
  }
  std::fprintf(stderr, "%d clients posting /v1/run for %d s...\n", o.clients, o.seconds);
  LoadResult l = load(server.socket(), o.clients, std::chrono::seconds(o.seconds));
  std::fprintf(stderr, "%zu runs, %u errors%s%s\n", l.latencies_ms.size(), l.errors, l.errors ? "; the first: " : "",
               l.first_error.c_str());
  BenchReport report("server", health.value("accel", ""));
  report.add_case("cli_run", cli_run);
  report.add_case("api_run_loaded", l.latencies_ms);
  report.add_value("requests_per_s", static_cast<double>(l.latencies_ms.size()) / l.seconds);
  report.add_value("errors", l.errors);
  report.add_value("clients", o.clients);
  server.succeeded();
  return report.to_json();
}

}  // namespace vial::bench
