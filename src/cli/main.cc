// vial: run untrusted code in throwaway QEMU microVMs.
#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"vial runs untrusted code in throwaway QEMU microVMs.\n"
               "Start with `vial doctor`, then `vial run -l python -c 'print(1)'`.",
               "vial"};
  app.set_version_flag("-V,--version", std::string("vial ") + VIAL_VERSION);
  app.require_subcommand(1);
  vial::cli::add_run_command(app);
  vial::cli::add_image_command(app);
  vial::cli::add_doctor_command(app);
  vial::cli::add_bench_command(app);
  vial::cli::add_machine_command(app);
  vial::cli::add_pack_command(app);
  vial::cli::add_serve_command(app);
  vial::cli::add_session_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
