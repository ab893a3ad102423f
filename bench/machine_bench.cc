#include "bench/machine_bench.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "bench/bench_report.h"
#include "machine/machine_store.h"
#include "util/error.h"

namespace vial::bench {
namespace {

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

nlohmann::json bench_machine(const MachineBenchOptions& options) {
  if (options.count < 1) throw Error(ErrorKind::invalid_input, "--count must be at least 1");
  machine::MachineStore store;
  machine::CreateOptions create;
  create.name = "vial-bench-" + std::to_string(::getpid());
  store.create(create);
  // Cycle 0 is the machine's first start, which also builds its boot snapshot: a case of its own.
  std::vector<double> first_start, start, stop;
  try {
    for (int i = 0; i <= options.count; ++i) {
      auto& starts = i == 0 ? first_start : start;
      auto t0 = std::chrono::steady_clock::now();
      store.start(create.name, options.accel);
      starts.push_back(ms_since(t0));
      t0 = std::chrono::steady_clock::now();
      store.stop(create.name);
      stop.push_back(ms_since(t0));
      std::fprintf(stderr, "%s %d/%d: start %.0f ms, stop %.0f ms\n", i == 0 ? "first start" : "cycle", i,
                   options.count, starts.back(), stop.back());
    }
  } catch (...) {
    store.remove(create.name, /*force=*/true);
    throw;
  }
  store.remove(create.name, /*force=*/true);
  BenchReport report("machine", options.accel.name());
  report.add_case("first_start", first_start);
  report.add_case("start", start);
  report.add_case("stop", stop);
  return report.to_json();
}

}  // namespace vial::bench
