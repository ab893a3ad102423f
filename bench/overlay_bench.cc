#include "bench/overlay_bench.h"

#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "bench/bench_report.h"
#include "storage/overlay_pool.h"
#include "storage/pristine_overlays.h"
#include "storage/storage_daemon.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace vial::bench {
namespace {

// A scratch dir next to vial's real overlays (same filesystem), removed however we leave.
class ScratchDir final {
 public:
  ScratchDir() {
    ensure_private_dir(overlays_dir());
    std::string templ = (overlays_dir() / "bench-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) throw_errno("mkdtemp in " + overlays_dir().string(), errno);
    path_ = templ;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Times `count` calls of make(target_i), each into a fresh file of `dir`, then removes them.
std::vector<double> time_case(const char* name, int count, const fs::path& dir,
                              const std::function<void(const fs::path&)>& make) {
  fs::create_directories(dir);
  std::vector<double> samples;
  for (int i = 0; i < count; ++i) {
    const fs::path target = dir / (std::to_string(i) + ".qcow2");
    const auto start = Clock::now();
    make(target);
    samples.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  const CaseStats s = summarize(samples);
  std::fprintf(stderr, "%-16s n=%d p50 %.3f ms p95 %.3f ms\n", name, count, s.p50_ms, s.p95_ms);
  fs::remove_all(dir);
  return samples;
}

}  // namespace

nlohmann::json bench_overlay(const OverlayBenchOptions& options) {
  if (options.count < 1) throw Error(ErrorKind::invalid_input, "--count must be at least 1");
  const int n = options.count;
  ScratchDir scratch;
  const fs::path& dir = scratch.path();
  const fs::path base = dir / "base.qcow2";
  auto made = run_capture({"qemu-img", "create", "-q", "-f", "qcow2", base.string(), "1G"}, std::chrono::seconds(60));
  if (made.exit_code != 0) throw Error(ErrorKind::unavailable, "qemu-img create failed: " + made.output);

  BenchReport report("overlay", "none");
  StorageDaemon daemon(dir);
  daemon.start();
  daemon.create_overlay(base, dir / "warmup.qcow2");
  report.add_case("daemon_create", time_case("daemon_create", n, dir / "daemon",
                                             [&](const fs::path& t) { daemon.create_overlay(base, t); }));

  auto qemu_img = time_case("qemu_img_create", n, dir / "qemu-img", [&](const fs::path& t) {
    auto r = run_capture({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base.string(), t.string()},
                         std::chrono::seconds(60));
    if (r.exit_code != 0) throw Error(ErrorKind::internal, "qemu-img create failed: " + r.output);
  });
  report.add_case("qemu_img_create", qemu_img);

  PristineOverlays pristine(dir / "pristine", [&](const fs::path& b, const fs::path& t) { daemon.create_overlay(b, t); });
  pristine.create(base, dir / "warmup-fast.qcow2");  // the one-time pristine build is not the case
  auto fast = time_case("fast_create", n, dir / "fast", [&](const fs::path& t) { pristine.create(base, t); });
  report.add_case("fast_create", fast);
  daemon.stop();

  OverlayPoolOptions pool_options;
  pool_options.daemon_run_parent = dir;
  pool_options.pristine_dir = dir / "pristine";
  // pool_size = n: every acquire is a hit, the steady state of a warm pool.
  OverlayPool pool(static_cast<int>(n / kOverlayPoolSizeRatio) + 1, dir / "pool", pool_options);
  pool.start({base});
  int misses = 0;
  report.add_case("pool_acquire", time_case("pool_acquire", n, dir / "acquired", [&](const fs::path& t) {
                    if (!pool.acquire(base, t)) ++misses;
                  }));
  pool.stop();

  report.add_value("fast_speedup_vs_qemu_img", summarize(qemu_img).p50_ms / summarize(fast).p50_ms);
  report.add_value("pool_misses", misses);
  return report.to_json();
}

}  // namespace vial::bench
