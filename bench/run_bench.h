// `vial bench run`: the one-shot path end to end (image -> overlay -> boot -> exec -> destroy).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "vm/accel.h"

namespace vial::bench {

struct RunBenchOptions {
  std::string language = "python";
  int count = 10;
  bool cold = false;  // boot from scratch instead of restoring the template
  Accel accel;
};

// Runs `count` sandboxes one after another; cases run_total, boot, exec. Progress on stderr.
// The template (if used) is built before the first timed run.
nlohmann::json bench_run(const RunBenchOptions& options);

}  // namespace vial::bench
