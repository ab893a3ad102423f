#include "bench/bench_report.h"

#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace vial::bench {
namespace {

double percentile(const std::vector<double>& sorted, double p) {
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

double round2(double v) { return std::round(v * 100.0) / 100.0; }

}  // namespace

CaseStats summarize(std::vector<double> samples) {
  CaseStats s;
  s.n = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.p50_ms = percentile(samples, 0.50);
  s.p95_ms = percentile(samples, 0.95);
  s.max_ms = samples.back();
  return s;
}

BenchReport::BenchReport(std::string bench, std::string accel) {
  struct sysinfo info {};
  ::sysinfo(&info);
  json_ = {{"bench", std::move(bench)},
           {"accel", std::move(accel)},
           {"host",
            {{"cpus", ::sysconf(_SC_NPROCESSORS_ONLN)},
             {"mem_mib", static_cast<uint64_t>(info.totalram) * info.mem_unit / (1024 * 1024)}}},
           {"cases", nlohmann::json::object()},
           {"values", nlohmann::json::object()}};
}

void BenchReport::add_case(const std::string& name, const std::vector<double>& samples_ms) {
  CaseStats s = summarize(samples_ms);
  json_["cases"][name] = {
      {"n", s.n}, {"p50_ms", round2(s.p50_ms)}, {"p95_ms", round2(s.p95_ms)}, {"max_ms", round2(s.max_ms)}};
}

void BenchReport::add_value(const std::string& name, double value) { json_["values"][name] = round2(value); }

nlohmann::json BenchReport::to_json() const { return json_; }

}  // namespace vial::bench
