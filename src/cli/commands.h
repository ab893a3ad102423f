// Each `vial` subcommand registers itself on the app; its callback throws
// CLI::RuntimeError(exit_code) to finish, which CLI11 turns into the process exit code.
#pragma once

namespace CLI {
class App;
}

namespace vial::cli {

void add_run_command(CLI::App& app);
void add_image_command(CLI::App& app);
void add_doctor_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_machine_command(CLI::App& app);
void add_pack_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_session_command(CLI::App& app);

}  // namespace vial::cli
