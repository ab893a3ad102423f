// Counters and histograms for GET /metrics (Prometheus text format 0.0.4).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace vial::server {

class Histogram final {
 public:
  static constexpr std::array<double, 12> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                     0.5,   1,    2.5,   5,    10,  30};
  void observe(double seconds);
  // "name_bucket{labels,le=...} N" lines, then _sum and _count.
  void write(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};
  uint64_t count_ = 0;
  double sum_ = 0;
};

// What the engine reports at scrape time (gauges).
struct EngineGauges {
  unsigned live_vms = 0;
  std::map<std::string, unsigned> pooled;  // by language
  unsigned sessions = 0;
  unsigned busy_sessions = 0;
  unsigned runs_in_flight = 0;
  uint64_t admission_rejections = 0;
};

class Metrics final {
 public:
  void request_done(const std::string& route, int status) { ++requests_[{route, status}]; }
  void error(const std::string& kind) { ++errors_[kind]; }
  // Execution latency (exec sent to exit) by language, and total request time.
  void exec_observed(const std::string& language, double seconds) { exec_[language].observe(seconds); }
  std::string render(const EngineGauges& gauges) const;

 private:
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> errors_;
  std::map<std::string, Histogram> exec_;
};

}  // namespace vial::server
