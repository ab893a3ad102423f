// `vial serve`: the HTTP API daemon (see docs/api.md).
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "images/image_store.h"
#include "server/server.h"
#include "vm/qemu_command.h"

namespace vial::cli {
namespace {

struct ServeArgs {
  std::string socket;
  std::string listen;
  std::string token_file;
  unsigned memory_mib = kDefaultMemoryMib;
  unsigned max_vms = 8;
  std::vector<std::string> pool = {"python=2"};
  bool no_templates = false;
  bool log_json = false;
  unsigned max_file_mib = 64;
  unsigned grace_s = 10;
  unsigned queue_timeout_s = 30;
};

std::map<std::string, unsigned> parse_pool(const std::vector<std::string>& specs) {
  std::map<std::string, unsigned> pool;
  for (const auto& spec : specs) {
    size_t eq = spec.find('=');
    std::string language = spec.substr(0, eq);
    char* end = nullptr;
    unsigned long n = eq == std::string::npos ? 0 : std::strtoul(spec.c_str() + eq + 1, &end, 10);
    if (eq == std::string::npos || end == spec.c_str() + eq + 1 || *end != '\0' || n > 64) {
      throw Error(ErrorKind::invalid_input, "--pool expects LANGUAGE=N with N from 0 to 64, got '" + spec + "'");
    }
    check_image_language(language);
    if (n > 0) pool[language] = static_cast<unsigned>(n);
  }
  return pool;
}

int serve(const ServeArgs& a) {
  try {
    server::ServerOptions o;
    o.socket_path = a.socket;
    if (!a.listen.empty()) o.listen = a.listen;
    if (!a.token_file.empty()) o.token_file = a.token_file;
    o.engine.accel = choose_accel("python", /*quiet=*/false);
    o.engine.memory_mib = a.memory_mib;
    o.engine.max_concurrent_vms = a.max_vms;
    o.engine.warm_pool = parse_pool(a.pool);
    o.engine.use_templates = !a.no_templates;
    o.engine.admission_timeout = std::chrono::seconds(a.queue_timeout_s);
    for (const auto& [language, n] : o.engine.warm_pool) require_image(language);
    o.api.accel_name = o.engine.accel.name();
    o.api.max_file_bytes = uint64_t{a.max_file_mib} << 20;
    o.log_json = a.log_json;
    o.shutdown_grace = std::chrono::seconds(a.grace_s);
    server::serve(o);
    return kExitOk;
  } catch (const std::exception& e) {
    return report_error(e, false, kExitFailure);
  }
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve the HTTP API (runs, sessions, files) on a unix socket or TCP");
  cmd->footer(
      "The socket defaults to $VIAL_SOCKET or $VIAL_HOME/run/vial.sock (mode 0600); `vial run` and\n"
      "`vial session` use it when it is up. TCP needs a bearer token file. SIGTERM shuts down\n"
      "gracefully: running requests get --grace seconds, then every VM is destroyed.\n"
      "Examples:\n"
      "  vial serve\n"
      "  vial serve --listen 127.0.0.1:8080 --token-file ~/.vial-token --pool python=4\n"
      "  curl --unix-socket /var/lib/vial/run/vial.sock -d '{\"language\":\"python\",\"code\":\"print(1)\"}' "
      "http://vial/v1/run");
  cmd->add_option("--socket", args->socket, "Unix socket path");
  cmd->add_option("--listen", args->listen, "Also listen on TCP HOST:PORT (needs --token-file)");
  cmd->add_option("--token-file", args->token_file, "File whose first line is the bearer token TCP clients must send");
  cmd->add_option("-m,--memory", args->memory_mib, "Guest memory per sandbox in MiB")->capture_default_str();
  cmd->add_option("--max-vms", args->max_vms, "Sandboxes alive at once, warm pool included")->capture_default_str();
  cmd->add_option("--pool", args->pool, "Warm pool size per language, LANGUAGE=N (repeatable; python=0 disables)")
      ->capture_default_str();
  cmd->add_option("--queue-timeout", args->queue_timeout_s,
                  "Seconds a request waits for a free sandbox slot before a 503 capacity error")
      ->capture_default_str();
  cmd->add_flag("--no-templates", args->no_templates, "Boot every sandbox cold instead of restoring snapshots");
  cmd->add_option("--max-file-mib", args->max_file_mib, "Largest file upload or download in MiB")->capture_default_str();
  cmd->add_option("--grace", args->grace_s, "Seconds running requests may finish at shutdown")->capture_default_str();
  cmd->add_flag("--log-json", args->log_json, "Log JSON lines instead of text");
  cmd->callback([args] { throw CLI::RuntimeError(serve(*args)); });
}

}  // namespace vial::cli
