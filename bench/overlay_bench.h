// `vial bench overlay`: the ways to make a sandbox disk, side by side on one base image.
#pragma once

#include <nlohmann/json.hpp>

namespace vial::bench {

struct OverlayBenchOptions {
  int count = 200;
};

// Cases daemon_create (QMP blockdev-create), qemu_img_create (a qemu-img process),
// fast_create (pristine copy, what vial does when the pool is empty) and pool_acquire (a
// rename from a warm pool); values fast_speedup_vs_qemu_img. Progress on stderr.
nlohmann::json bench_overlay(const OverlayBenchOptions& options);

}  // namespace vial::bench
