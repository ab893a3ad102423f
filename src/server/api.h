// The HTTP API's handlers over one VmManager: one-shot runs, sessions and their files,
// named machines, health and metrics. Routes and their limits are declared here;
// docs/api.md documents them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "sandbox/vm_manager.h"
#include "server/metrics.h"
#include "server/router.h"
#include "server/sessions.h"

namespace vial::server {

struct ApiSettings {
  std::string accel_name;                     // reported in results and /healthz
  uint64_t max_json_bytes = 16u << 20;        // request bodies other than file uploads
  uint64_t max_file_bytes = 64u << 20;        // PUT .../files/{path} and GET of a file
};

// Thrown when the client hung up mid-request: the connection is closed without a reply.
struct ClientGone : std::exception {
  const char* what() const noexcept override { return "the client closed the connection"; }
};

class Api final {
  static constexpr int kBlockingThreads = 4;

 public:
  Api(std::shared_ptr<VmManager> manager, ApiSettings settings);
  const Router& router() const { return router_; }
  Metrics& metrics() { return metrics_; }
  SessionStore& sessions() { return sessions_; }
  // While draining (shutdown), /healthz says so and new VM work is refused with 503.
  void begin_drain() { draining_ = true; }

 private:
  asio::awaitable<void> healthz(Exchange& ex);
  asio::awaitable<void> metrics(Exchange& ex);
  asio::awaitable<void> run(Exchange& ex);
  asio::awaitable<void> create_session(Exchange& ex);
  asio::awaitable<void> list_sessions(Exchange& ex);
  asio::awaitable<void> get_session(Exchange& ex);
  asio::awaitable<void> delete_session(Exchange& ex);
  asio::awaitable<void> session_exec(Exchange& ex);
  asio::awaitable<void> put_file(Exchange& ex);
  asio::awaitable<void> get_file(Exchange& ex);
  asio::awaitable<void> list_files(Exchange& ex);
  // Named machines (machine_routes.cc): the same store as `vial machine`.
  asio::awaitable<void> list_machines(Exchange& ex);
  asio::awaitable<void> create_machine(Exchange& ex);
  asio::awaitable<void> get_machine(Exchange& ex);
  asio::awaitable<void> start_machine(Exchange& ex);
  asio::awaitable<void> stop_machine(Exchange& ex);
  asio::awaitable<void> delete_machine(Exchange& ex);
  asio::awaitable<void> machine_exec(Exchange& ex);
  // Runs blocking machine-store work (SQLite, boots, graceful stops) off the event loop.
  // `work` is copied; pass a named lambda (GCC 12 destroys temporaries in co_await twice).
  template <typename F>
  auto offload(const F& work) -> asio::awaitable<decltype(work())>;

  // Runs a program through `execute` and answers (JSON, or NDJSON events when the client asked
  // for them). Throws ClientGone when the client hung up; the run is cancelled then.
  using Executor = std::function<asio::awaitable<RunResult>(const ExecCallbacks&, bool collect_output)>;
  asio::awaitable<void> respond_with_run(Exchange& ex, const std::string& language, const Executor& execute,
                                         std::chrono::steady_clock::time_point started);
  // Runs `request` on `vm` and answers (JSON, or NDJSON events when the client asked for
  // them). Throws ClientGone when the client hung up; the run is cancelled then.
  asio::awaitable<void> execute(Exchange& ex, Vm& vm, const RunRequest& request,
                                std::chrono::steady_clock::time_point started);
  void refuse_while_draining() const;
  nlohmann::json session_json(const Session& s) const;

  std::shared_ptr<VmManager> manager_;
  ApiSettings settings_;
  Router router_;
  Metrics metrics_;
  SessionStore sessions_;
  asio::thread_pool blocking_{kBlockingThreads};
  unsigned runs_in_flight_ = 0;
  bool draining_ = false;
};

}  // namespace vial::server
