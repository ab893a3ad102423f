#include "vm/host_tsc.h"

#include <time.h>

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

}  // namespace

uint64_t host_tsc_khz() {
  static const uint64_t khz = measure();
  return khz;
}

}  // namespace vial
