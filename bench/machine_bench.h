// `vial bench machine`: named machines — how long `vial machine start` of a stopped machine
// takes to agent ready (cold boot from its persistent disk, supervisor and relay included).
#pragma once

#include <nlohmann/json.hpp>

#include "vm/accel.h"

namespace vial::bench {

struct MachineBenchOptions {
  int count = 5;  // start/stop cycles
  Accel accel;
};

// Case start (MachineStore::start until it returns: agent ready, init done) and stop. Makes a
// throwaway machine in $VIAL_HOME and deletes it afterwards. Progress on stderr.
nlohmann::json bench_machine(const MachineBenchOptions& options);

}  // namespace vial::bench
