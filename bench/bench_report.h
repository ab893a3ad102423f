// The one JSON shape every `vial bench` prints (see DESIGN.md):
// {"bench", "accel", "host": {"cpus", "mem_mib"}, "cases": {name: {n, p50_ms, p95_ms, max_ms}},
//  "values": {name: number}}
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vial::bench {

struct CaseStats {
  size_t n = 0;
  double p50_ms = 0;
  double p95_ms = 0;
  double max_ms = 0;
};

// Nearest-rank percentiles of latency samples in milliseconds.
CaseStats summarize(std::vector<double> samples_ms);

class BenchReport final {
 public:
  BenchReport(std::string bench, std::string accel);
  void add_case(const std::string& name, const std::vector<double>& samples_ms);
  void add_value(const std::string& name, double value);
  nlohmann::json to_json() const;

 private:
  nlohmann::json json_;
};

}  // namespace vial::bench
