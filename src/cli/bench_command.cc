// `vial bench ...`: measurements printed as one JSON object (shape in DESIGN.md).
#include <iostream>

#include <CLI/CLI.hpp>

#include "bench/engine_bench.h"
#include "bench/machine_bench.h"
#include "bench/net_bench.h"
#include "bench/overlay_bench.h"
#include "bench/run_bench.h"
#include "bench/server_bench.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "images/image_store.h"
#include "machine/machine_store.h"

namespace vial::cli {
namespace {

// Runs one bench for `language` and prints its JSON; ends the command with its exit code.
[[noreturn]] void print_bench(const std::string& language, const std::function<nlohmann::json(const Accel&)>& bench) {
  try {
    check_image_language(language);
    std::cout << dump_json(bench(choose_accel(language, false)), 2) << std::endl;
  } catch (const std::exception& e) {
    throw CLI::RuntimeError(report_error(e, false, kExitFailure));
  }
  throw CLI::RuntimeError(kExitOk);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Measure vial; prints one JSON object, progress on stderr");
  bench->require_subcommand(1);

  auto opts = std::make_shared<bench::RunBenchOptions>();
  auto json = std::make_shared<bool>(false);
  CLI::App* run = bench->add_subcommand("run", "One-shot `vial run` end to end: cases run_total, boot, exec");
  run->add_option("-l,--language", opts->language, "python, javascript or shell")->capture_default_str();
  run->add_option("-n,--count", opts->count, "Number of runs")->capture_default_str();
  run->add_flag("--json", *json, "Print JSON (the only format; accepted for symmetry)");
  run->add_flag("--cold", opts->cold, "Boot every VM from scratch instead of restoring the template");
  run->callback([opts] {
    print_bench(opts->language, [opts](const Accel& accel) {
      opts->accel = accel;
      return bench::bench_run(*opts);
    });
  });

  auto netb = std::make_shared<bench::NetBenchOptions>();
  CLI::App* n = bench->add_subcommand(
      "net", "The network path (python image): cases connect, dns, restore_plain, restore_net; values "
             "download_mib_s, host_download_mib_s, restore_net_ratio");
  n->add_option("-n,--count", netb->count, "Samples per latency case")->capture_default_str();
  n->add_option("--mib", netb->download_mib, "Size of the download, MiB")->capture_default_str();
  n->add_flag("--json", *json, "Print JSON (the only format; accepted for symmetry)");
  n->footer("Talks only to a server it starts on 127.0.0.2. Example: vial bench net --count 20 --json");
  n->callback([netb] {
    print_bench("python", [netb](const Accel& accel) {
      netb->accel = accel;
      return bench::bench_net(*netb);
    });
  });

  auto engine = std::make_shared<bench::EngineBenchOptions>();
  CLI::App* e = bench->add_subcommand(
      "engine", "The engine: cases cold, template_restore, warm_acquire, exec_print; values throughput_per_s, idle_pss_mib");
  e->add_option("-l,--language", engine->language, "python, javascript or shell")->capture_default_str();
  e->add_option("-n,--count", engine->count, "Samples per latency case")->capture_default_str();
  e->add_option("--seconds", engine->throughput_seconds, "Length of the throughput run")->capture_default_str();
  e->add_flag("--json", *json, "Print JSON (the only format; accepted for symmetry)");
  e->callback([engine] {
    print_bench(engine->language, [engine](const Accel& accel) {
      engine->accel = accel;
      return bench::bench_engine(*engine);
    });
  });

  auto machine_opts = std::make_shared<bench::MachineBenchOptions>();
  CLI::App* m = bench->add_subcommand("machine", "Named machines: cases first_start (a new machine to agent ready, building its boot snapshot), "
                                    "start (stopped to agent ready), stop");
  m->add_option("-n,--count", machine_opts->count, "Start/stop cycles after the first start")->capture_default_str();
  m->add_flag("--json", *json, "Print JSON (the only format; accepted for symmetry)");
  m->callback([machine_opts] {
    print_bench(machine::kDefaultMachineImage, [machine_opts](const Accel& accel) {
      machine_opts->accel = accel;
      return bench::bench_machine(*machine_opts);
    });
  });

  auto server_opts = std::make_shared<bench::ServerBenchOptions>();
  CLI::App* s = bench->add_subcommand(
      "server", "vial serve: case cli_run (vial run through a server with a warm pool); value requests_per_s");
  s->add_option("-n,--count", server_opts->count, "cli_run samples")->capture_default_str();
  s->add_option("--clients", server_opts->clients, "Concurrent clients posting /v1/run")->capture_default_str();
  s->add_option("--seconds", server_opts->seconds, "Length of the requests_per_s run")->capture_default_str();
  s->add_option("--pool", server_opts->pool, "The server's warm python VMs")->capture_default_str();
  s->add_option("--max-vms", server_opts->max_vms, "The server's --max-vms")->capture_default_str();
  s->add_flag("--json", *json, "Print JSON (the only format; accepted for symmetry)");
  s->callback([server_opts] {
    print_bench("python", [server_opts](const Accel&) { return bench::bench_server(*server_opts); });
  });

  auto overlay_opts = std::make_shared<bench::OverlayBenchOptions>();
  CLI::App* overlay = bench->add_subcommand(
      "overlay", "Sandbox disks: cases daemon_create, qemu_img_create, fast_create, pool_acquire");
  overlay->add_option("-n,--count", overlay_opts->count, "Overlays per case")->capture_default_str();
  overlay->add_flag("--json", *json, "Print JSON (the only format; accepted for symmetry)");
  overlay->callback([overlay_opts] {
    try {
      std::cout << dump_json(bench::bench_overlay(*overlay_opts), 2) << std::endl;
      throw CLI::RuntimeError(kExitOk);
    } catch (const CLI::RuntimeError&) {
      throw;
    } catch (const std::exception& e) {
      throw CLI::RuntimeError(report_error(e, false, kExitFailure));
    }
  });
}

}  // namespace vial::cli
