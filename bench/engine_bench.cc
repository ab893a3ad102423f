#include "bench/engine_bench.h"

#include <cstdio>
#include <fstream>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "bench/bench_report.h"
#include "sandbox/vm_manager.h"
#include "util/error.h"
#include "util/event_loop.h"

namespace vial::bench {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Proportional set size of a process in MiB: its private pages plus its share of pages it
// maps together with others (the template's memory file, QEMU's libraries).
double pss_mib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key) {
    if (key == "Pss:" && in >> kib) return static_cast<double>(kib) / 1024.0;
    std::getline(in, unit);
  }
  return 0;
}

asio::awaitable<void> sleep_ms(int ms) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await t.async_wait(asio::use_awaitable);
}

RunRequest print_one(const std::string& language) {
  RunRequest r;
  r.language = language;
  r.code = print_one_code(language);
  return r;
}

void check_output(const RunResult& r) {
  if (r.exit_code != 0 || r.stdout_data != "1\n") {
    throw Error(ErrorKind::internal, "bench program gave exit code " + std::to_string(r.exit_code) + " and output '" +
                                         r.stdout_data + r.stderr_data + "'");
  }
}

std::shared_ptr<VmManager> make_manager(asio::any_io_executor ex, const EngineBenchOptions& o, bool templates,
                                        unsigned pool, unsigned max_vms) {
  VmManagerSettings s;
  s.accel = o.accel;
  s.use_templates = templates;
  s.max_concurrent_vms = max_vms;
  if (pool > 0) s.warm_pool[o.language] = pool;
  return VmManager::create(std::move(ex), s);
}

// create_vm + destroy `count` times; samples are create_vm's time.
asio::awaitable<std::vector<double>> acquire_samples(VmManager& m, const EngineBenchOptions& o, const char* what,
                                                     unsigned wait_for_pool) {
  std::vector<double> samples;
  for (int i = 0; i < o.count; ++i) {
    while (m.stats().pooled[o.language] < wait_for_pool) co_await sleep_ms(20);
    const auto start = Clock::now();
    auto vm = co_await m.create_vm(o.language, "bench", what);
    samples.push_back(ms_since(start));
    m.destroy_vm(vm);
    std::fprintf(stderr, "%s %d/%d: %.1f ms\n", what, i + 1, o.count, samples.back());
  }
  co_return samples;
}

}  // namespace

nlohmann::json bench_engine(const EngineBenchOptions& o) {
  if (o.count < 1) throw Error(ErrorKind::invalid_input, "--count must be at least 1");
  if (o.throughput_seconds < 1) throw Error(ErrorKind::invalid_input, "--seconds must be at least 1");
  BenchReport report("engine", o.accel.name());
  run_with_signals([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;

    auto cold = make_manager(ex, o, false, 0, 1);
    co_await cold->start();
    report.add_case("cold", co_await acquire_samples(*cold, o, "cold", 0));
    cold->stop();

    auto restore = make_manager(ex, o, true, 0, 2);
    co_await restore->start();
    restore->destroy_vm(co_await restore->create_vm(o.language, "bench", "template-build"));  // not timed
    report.add_case("template_restore", co_await acquire_samples(*restore, o, "template_restore", 0));

    auto vm = co_await restore->create_vm(o.language, "bench", "exec");
    std::vector<double> exec;
    for (int i = 0; i < o.count; ++i) {
      RunResult r = co_await vm->execute(print_one(o.language), {});
      check_output(r);
      exec.push_back(r.timing.exec_ms);
      std::fprintf(stderr, "exec_print %d/%d: %.1f ms\n", i + 1, o.count, exec.back());
    }
    report.add_case("exec_print", exec);
    // Idle PSS: two live VMs from one template, settled for a second.
    auto second = co_await restore->create_vm(o.language, "bench", "idle");
    co_await sleep_ms(1000);
    report.add_value("idle_pss_mib", (pss_mib(vm->qemu_pid()) + pss_mib(second->qemu_pid())) / 2);
    restore->stop();

    auto warm = make_manager(ex, o, true, 1, 2);
    co_await warm->start();
    report.add_case("warm_acquire", co_await acquire_samples(*warm, o, "warm_acquire", 1));
    warm->stop();

    // Throughput: 2 workers create + execute + destroy until the time is up; a pool of 2 refills behind them.
    auto busy = make_manager(ex, o, true, 2, 4);
    co_await busy->start();
    int done = 0;
    const auto start = Clock::now();
    const auto end = start + std::chrono::seconds(o.throughput_seconds);
    auto worker = [&]() -> asio::awaitable<void> {
      while (Clock::now() < end) {
        auto v = co_await busy->create_vm(o.language, "bench", "throughput");
        RunResult r = co_await v->execute(print_one(o.language), {});
        busy->destroy_vm(v);
        check_output(r);
        ++done;
      }
    };
    using namespace boost::asio::experimental::awaitable_operators;
    co_await (worker() && worker());
    report.add_value("throughput_per_s", done / (ms_since(start) / 1000.0));
    std::fprintf(stderr, "throughput: %d sandboxes in %.1f s\n", done, ms_since(start) / 1000.0);
    busy->stop();
  });
  return report.to_json();
}

}  // namespace vial::bench
