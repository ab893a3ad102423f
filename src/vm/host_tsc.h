// The host's TSC rate. Under TCG the guest reads the host TSC directly, but the guest kernel
// calibrates it against the emulated PIT, which fails on a busy host ("Unable to calibrate
// against PIT") and leaves the guest hung without a clocksource. Passing the rate on the
// kernel command line (tsc_early_khz) skips that calibration.
#pragma once

#include <cstdint>

namespace vial {

// Measured against CLOCK_MONOTONIC (~10 ms) once per host boot and kept in vial_home()/tsc_khz;
// 0 if it can't be measured.
uint64_t host_tsc_khz();

}  // namespace vial
