// `vial bench server`: vial serve as its users see it — the CLI's round trip through a running
// server with a warm pool, and how many one-shot runs the HTTP API completes per second.
#pragma once

#include <nlohmann/json.hpp>

namespace vial::bench {

struct ServerBenchOptions {
  int count = 20;        // cli_run samples
  int clients = 8;       // concurrent HTTP clients for requests_per_s
  int seconds = 30;      // length of the requests_per_s run
  unsigned pool = 2;     // the server's warm python VMs
  unsigned max_vms = 8;  // the server's --max-vms
};

// Starts a private `vial serve` (its own socket in $VIAL_HOME/run), waits for its warm pool,
// measures case cli_run (`vial run -l python -c 'print(1)'` through it, the pool refilled
// before each sample) and value requests_per_s (clients posting /v1/run for `seconds`), then
// stops it. Progress on stderr.
nlohmann::json bench_server(const ServerBenchOptions& options);

}  // namespace vial::bench
