// `vial run`: one program in a fresh microVM, output streamed live.
#include <unistd.h>

#include <iostream>
#include <iterator>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/network_options.h"
#include "server/daemon_client.h"
#include "sandbox/runner.h"
#include "util/error.h"
#include "util/user_file.h"
#include "vm/qemu_command.h"
#include "util/event_loop.h"

namespace vial::cli {
namespace {

struct RunArgs {
  std::string language;
  std::string code;
  std::string file;
  int timeout_s = 30;
  unsigned memory_mib = kDefaultMemoryMib;
  std::vector<std::string> env;
  std::string cwd;
  bool forward_stdin = false;
  bool json = false;
  bool cold = false;
  bool memory_given = false;
  bool no_daemon = false;
  std::string socket;
  net::NetOptions net;
};

RunRequest to_request(const RunArgs& a) {
  RunRequest r;
  r.language = a.language;
  if (!a.code.empty() && !a.file.empty()) {
    throw Error(ErrorKind::invalid_input, "give either -c CODE or FILE, not both");
  }
  if (!a.file.empty()) {
    r.code = read_user_file(a.file, kMaxCodeFileBytes, "the code file");
  } else {
    r.code = a.code;
  }
  if (a.timeout_s <= 0 || a.timeout_s > kMaxRunTimeout.count()) {
    throw Error(ErrorKind::invalid_input,
                "--timeout must be between 1 and " + std::to_string(kMaxRunTimeout.count()) + " seconds");
  }
  r.timeout = std::chrono::seconds(a.timeout_s);
  r.memory_mib = a.memory_mib;
  r.cwd = a.cwd;
  for (const auto& kv : a.env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw Error(ErrorKind::invalid_input, "-e expects KEY=VALUE, got '" + kv + "'");
    }
    r.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (a.forward_stdin) {
    r.stdin_data.emplace(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  validate(r);
  return r;
}

void report_limits(const RunResult& result, const RunRequest& request, int timeout_s) {
  if (result.timed_out) {
    std::fprintf(stderr, "vial: timed out after %d s: the program was killed\n", timeout_s);
  } else if (result.stdout_truncated || result.stderr_truncated) {
    std::fprintf(stderr, "vial: output truncated (limits: %llu bytes stdout, %llu bytes stderr)\n",
                 static_cast<unsigned long long>(request.stdout_limit),
                 static_cast<unsigned long long>(request.stderr_limit));
  }
}

// The same run through a `vial serve` daemon: its warm pool makes it fast.
int run_on_daemon(const std::filesystem::path& socket, RunRequest request, const net::NetPolicy& network,
                  const RunArgs& args) {
  server::DaemonClient client(socket);
  nlohmann::json body = run_request_to_json(request);
  body.erase("memory_mib");  // the server's size (-m runs in this process)
  if (network.enabled) body["network"] = net::to_json(network);
  if (args.json) {
    nlohmann::json reply = client.call_json("POST", "/v1/run", body);
    std::cout << dump_json(reply) << std::endl;
    return reply.value("exit_code", kExitVialError);
  }
  const RunResult result = stream_run(client, "/v1/run", body);
  report_limits(result, request, args.timeout_s);
  return result.exit_code;
}

int run(const RunArgs& args) {
  try {
    RunRequest request = to_request(args);
    net::NetPolicy network = net::make_policy(args.net);
    if (!args.no_daemon && !args.cold && !args.memory_given) {
      if (auto socket = server::find_daemon(args.socket)) return run_on_daemon(*socket, request, network, args);
    }
    RunOptions options;
    options.network = std::move(network);
    options.accel = choose_accel(request.language, args.json);
    options.collect_output = args.json;
    options.use_template = !args.cold;
    ExecCallbacks stream;
    if (!args.json) {
      stream.on_stdout = [](std::string_view chunk) { write_all(STDOUT_FILENO, chunk); };
      stream.on_stderr = [](std::string_view chunk) { write_all(STDERR_FILENO, chunk); };
    }
    RunResult result;
    run_with_signals([&]() -> boost::asio::awaitable<void> { result = co_await run_once(request, options, stream); });
    if (args.json) {
      std::cout << dump_json(run_result_to_json(result, options.accel.name())) << std::endl;
    } else {
      report_limits(result, request, args.timeout_s);
    }
    return result.exit_code;
  } catch (const std::exception& e) {
    return report_error(e, args.json);
  }
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand("run", "Run code in a fresh microVM and print its output");
  cmd->footer(
      "The program's exit code becomes vial's; a timeout exits 124, a failure of vial itself 125.\n"
      "When a `vial serve` daemon is running (default socket, --socket or $VIAL_SOCKET), the run goes\n"
      "through it and uses its warm pool; --no-daemon, --cold or -m run it in this process.\n" +
      std::string(kNetworkHelp) +
      "Examples:\n"
      "  vial run -l python -c 'print(6*7)'\n"
      "  vial run -l shell script.sh -t 10 -e NAME=world\n"
      "  echo data | vial run -l python -i -c 'import sys; print(sys.stdin.read())'\n"
      "  vial run -l shell --allow-host example.com -c 'curl -sI https://example.com/'");
  cmd->add_option("-l,--language", args->language, "python, javascript or shell")->required();
  cmd->add_option("-c,--code", args->code, "Code to run");
  cmd->add_option("file", args->file, "File with the code to run (instead of -c)");
  cmd->add_option("-t,--timeout", args->timeout_s, "Seconds before the program is killed (1-3600)")
      ->capture_default_str();
  cmd->add_option("-m,--memory", args->memory_mib, "Guest memory in MiB (at least 64)")
      ->capture_default_str()
      ->each([args](const std::string&) { args->memory_given = true; });
  cmd->add_option("-e,--env", args->env, "Environment variable KEY=VALUE (repeatable)")->allow_extra_args(false);
  cmd->add_option("-w,--workdir", args->cwd, "Working directory in the guest");
  cmd->add_flag("-i,--stdin", args->forward_stdin, "Send vial's stdin to the program");
  cmd->add_flag("--json", args->json, "Print one JSON object with output, exit code and timing");
  cmd->add_flag("--cold", args->cold,
                "Boot the VM from scratch instead of restoring the image's template snapshot (never uses a daemon)");
  add_network_options(cmd, args->net, /*ports=*/false);
  cmd->add_option("--socket", args->socket, "Run through the `vial serve` daemon on this socket ($VIAL_SOCKET)");
  cmd->add_flag("--no-daemon", args->no_daemon, "Run in this process even when a `vial serve` daemon is up");
  cmd->callback([args] { throw CLI::RuntimeError(run(*args)); });
}

}  // namespace vial::cli
