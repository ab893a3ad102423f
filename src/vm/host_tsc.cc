#include "vm/host_tsc.h"

#include <time.h>

#include <fstream>
#include <string>

#include "util/paths.h"

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace vial {
namespace {

uint64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t measure() {
#if defined(__x86_64__)
  const uint64_t t0 = now_ns();
  const uint64_t c0 = __rdtsc();
  uint64_t t1 = t0;
  while (t1 - t0 < 10'000'000u) t1 = now_ns();
  const uint64_t c1 = __rdtsc();
  return (c1 - c0) * 1'000'000u / (t1 - t0);  // cycles per ms = kHz
#else
  return 0;
#endif
}

std::string boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  in >> id;
  return id;
}

// The rate only changes with a reboot: keep it beside accel.json, keyed by the kernel's boot id,
// so each supervisor and one-shot VM skips the 10 ms busy wait.
uint64_t cached_or_measured() {
  const std::string boot = boot_id();
  const std::filesystem::path file = vial_home() / "tsc_khz";
  std::string cached_boot;
  uint64_t khz = 0;
  if (std::ifstream in(file); in >> cached_boot >> khz && cached_boot == boot && !boot.empty() && khz > 0) return khz;
  khz = measure();
  if (khz > 0 && !boot.empty()) replace_file(file, boot + " " + std::to_string(khz) + "\n");
  return khz;
}

}  // namespace

uint64_t host_tsc_khz() {
  static const uint64_t khz = cached_or_measured();
  return khz;
}

}  // namespace vial
