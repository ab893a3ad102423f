#include "server/metrics.h"

#include <fmt/format.h>

#include "net/gateway.h"

namespace vial::server {
namespace {

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) ++buckets_[i];
  }
  ++count_;
  sum_ += seconds;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < kBounds.size(); ++i) {
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, kBounds[i], buckets_[i]);
  }
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, count_);
  out += fmt::format("{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels, sum_, name, labels, count_);
}

std::string Metrics::render(const EngineGauges& g) const {
  std::string out;
  header(out, "vial_sandboxes", "gauge", "Sandbox VMs by state.");
  unsigned pooled = 0;
  for (const auto& [language, n] : g.pooled) pooled += n;
  unsigned in_use = g.live_vms >= pooled ? g.live_vms - pooled : 0;
  out += fmt::format("vial_sandboxes{{state=\"pooled\"}} {}\n", pooled);
  out += fmt::format("vial_sandboxes{{state=\"in_use\"}} {}\n", in_use);
  header(out, "vial_warm_pool_size", "gauge", "Ready VMs in the warm pool, by language.");
  for (const auto& [language, n] : g.pooled) out += fmt::format("vial_warm_pool_size{{language=\"{}\"}} {}\n", language, n);
  header(out, "vial_sessions", "gauge", "Open sessions, and those running code now.");
  out += fmt::format("vial_sessions{{state=\"idle\"}} {}\n", g.sessions - g.busy_sessions);
  out += fmt::format("vial_sessions{{state=\"busy\"}} {}\n", g.busy_sessions);
  header(out, "vial_runs_in_flight", "gauge", "One-shot runs in progress.");
  out += fmt::format("vial_runs_in_flight {}\n", g.runs_in_flight);
  header(out, "vial_admission_rejections_total", "counter", "VM requests refused for lack of capacity.");
  out += fmt::format("vial_admission_rejections_total {}\n", g.admission_rejections);
  const auto& n = net::process_counters();
  header(out, "vial_net_decisions_total", "counter", "Network decisions of this server's VMs, by kind and verdict.");
  out += fmt::format("vial_net_decisions_total{{kind=\"dns\",verdict=\"allowed\"}} {}\n", n.dns_allowed.load());
  out += fmt::format("vial_net_decisions_total{{kind=\"dns\",verdict=\"denied\"}} {}\n", n.dns_denied.load());
  out += fmt::format("vial_net_decisions_total{{kind=\"tcp\",verdict=\"allowed\"}} {}\n", n.tcp_allowed.load());
  out += fmt::format("vial_net_decisions_total{{kind=\"tcp\",verdict=\"denied\"}} {}\n", n.tcp_denied.load());
  header(out, "vial_net_bytes_total", "counter", "Bytes relayed for this server's VMs (up: guest to outside).");
  out += fmt::format("vial_net_bytes_total{{direction=\"up\"}} {}\n", n.bytes_up.load());
  out += fmt::format("vial_net_bytes_total{{direction=\"down\"}} {}\n", n.bytes_down.load());
  header(out, "vial_errors_total", "counter", "Failed requests by error kind.");
  for (const auto& [kind, n] : errors_) out += fmt::format("vial_errors_total{{kind=\"{}\"}} {}\n", kind, n);
  header(out, "vial_http_requests_total", "counter", "HTTP requests by route and status.");
  for (const auto& [key, n] : requests_) {
    out += fmt::format("vial_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, n);
  }
  header(out, "vial_exec_duration_seconds", "histogram", "Time from exec sent to exit received, by language.");
  for (const auto& [language, h] : exec_) h.write(out, "vial_exec_duration_seconds", "language=\"" + language + "\"");
  return out;
}

}  // namespace vial::server
