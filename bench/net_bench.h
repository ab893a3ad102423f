// `vial bench net`: the network path (issue 13) against a server the bench starts on
// 127.0.0.2 — connect and DNS latency seen from the guest, download throughput into the guest
// beside the host's own, and what a network costs a template restore.
#pragma once

#include <nlohmann/json.hpp>

#include "vm/accel.h"

namespace vial::bench {

struct NetBenchOptions {
  int count = 20;        // samples per latency case
  int download_mib = 100;
  Accel accel;
};

// Cases connect (TCP connect + one request/response round trip through the gateway), dns (a
// lookup of an allowed name), restore_plain and restore_net (create_vm, plus enable_network for
// the second); values download_mib_s (guest), host_download_mib_s (the host's python3, same
// server, same code) and restore_net_ratio (p50 restore_net / p50 restore_plain).
nlohmann::json bench_net(const NetBenchOptions& options);

}  // namespace vial::bench
