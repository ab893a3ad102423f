#include "bench/run_bench.h"

#include <cstdio>

#include "bench/bench_report.h"
#include "sandbox/runner.h"
#include "util/error.h"
#include "util/event_loop.h"

namespace vial::bench {

nlohmann::json bench_run(const RunBenchOptions& options) {
  if (options.count < 1) throw Error(ErrorKind::invalid_input, "--count must be at least 1");
  RunRequest request;
  request.language = options.language;
  request.code = print_one_code(options.language);
  RunOptions run_options;
  run_options.accel = options.accel;
  run_options.use_template = !options.cold;

  std::vector<double> total, boot, exec;
  for (int i = options.cold ? 0 : -1; i < options.count; ++i) {  // run -1 builds the template
    RunResult r;
    run_with_signals([&]() -> asio::awaitable<void> { r = co_await run_once(request, run_options, {}); });
    if (r.exit_code != 0 || r.stdout_data != "1\n") {
      throw Error(ErrorKind::internal, "bench run " + std::to_string(i) + " gave exit code " +
                                           std::to_string(r.exit_code) + " and output '" + r.stdout_data + "'");
    }
    if (i < 0) continue;
    total.push_back(r.timing.total_ms);
    boot.push_back(r.timing.boot_ms);
    exec.push_back(r.timing.exec_ms);
    std::fprintf(stderr, "run %d/%d: total %.0f ms (boot %.0f, exec %.0f)\n", i + 1, options.count,
                 r.timing.total_ms, r.timing.boot_ms, r.timing.exec_ms);
  }
  BenchReport report(options.cold ? "run_cold" : "run", options.accel.name());
  report.add_case("run_total", total);
  report.add_case("boot", boot);
  report.add_case("exec", exec);
  return report.to_json();
}

}  // namespace vial::bench
