// `vial bench engine`: the sandbox engine's paths side by side — cold boot, template
// restore, warm-pool acquire, execute on a live VM, throughput and idle memory.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "vm/accel.h"

namespace vial::bench {

struct EngineBenchOptions {
  std::string language = "python";
  int count = 5;             // samples per latency case
  int throughput_seconds = 30;
  Accel accel;
};

// Cases cold, template_restore, warm_acquire, exec_print; values throughput_per_s (create +
// execute + destroy, 2 workers) and idle_pss_mib (PSS of an idle VM's QEMU). Progress on stderr.
nlohmann::json bench_engine(const EngineBenchOptions& options);

}  // namespace vial::bench
