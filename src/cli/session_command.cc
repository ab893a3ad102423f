// `vial session`: sessions of a running `vial serve` (a VM kept across calls, like a notebook).
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <iterator>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/network_options.h"
#include "machine/machine_config.h"
#include "server/daemon_client.h"
#include "util/user_file.h"
#include "util/error.h"

namespace vial::cli {

using server::DaemonClient;
using server::require_daemon;
using server::url_path_escape;
namespace {

struct SessionArgs {
  std::string socket;
  bool json = false;
  // create
  std::string language;
  unsigned idle_timeout_s = 600;
  net::NetOptions net;
  // exec / put / get / ls take one id, rm several
  std::string id;
  std::vector<std::string> ids;
  std::string code;
  std::string file;
  int timeout_s = 30;
  std::vector<std::string> env;
  std::string cwd;
  bool forward_stdin = false;
  std::string local;
  std::string remote;
  std::string mode = "644";
  std::string dir;
};


// Runs `body` and turns failures into vial's one-line error and exit code.
int guarded_command(const SessionArgs& a, const std::function<int(DaemonClient&)>& body) {
  try {
    net::make_policy(a.net);  // bad network flags are usage errors, daemon or not
    DaemonClient client(require_daemon(a.socket));
    return body(client);
  } catch (const std::exception& e) {
    return report_error(e, a.json, kExitFailure);
  }
}

int create(const SessionArgs& a, DaemonClient& c) {
  nlohmann::json body = {{"language", a.language}, {"idle_timeout", a.idle_timeout_s}};
  net::NetPolicy network = net::make_policy(a.net);
  if (network.enabled) body["network"] = net::to_json(network);
  auto s = c.call_json("POST", "/v1/sessions", body);
  if (a.json) {
    std::cout << dump_json(s) << std::endl;
  } else {
    std::cout << s.value("id", "") << std::endl;
  }
  return kExitOk;
}

int exec(const SessionArgs& a, DaemonClient& c) {
  nlohmann::json body = {{"timeout", a.timeout_s}};
  if (!a.code.empty() && !a.file.empty()) throw Error(ErrorKind::invalid_input, "give either -c CODE or FILE, not both");
  body["code"] = a.file.empty() ? a.code : read_user_file(a.file, kMaxCodeFileBytes, "the code file");
  if (!a.cwd.empty()) body["cwd"] = a.cwd;
  for (const auto& kv : a.env) {
    auto [key, value] = machine::split_env(kv, "-e");
    body["env"][key] = value;
  }
  if (a.forward_stdin) put_bytes(body, "stdin", std::string(std::istreambuf_iterator<char>(std::cin), {}));
  const std::string target = "/v1/sessions/" + url_path_escape(a.id) + "/exec";
  if (a.json) {
    auto r = c.call_json("POST", target, body);
    std::cout << dump_json(r) << std::endl;
    return r.value("exit_code", kExitVialError);
  }
  const RunResult r = stream_run(c, target, body);
  if (r.timed_out) std::fprintf(stderr, "vial: timed out after %d s: the program was killed\n", a.timeout_s);
  return r.exit_code;
}

int put(const SessionArgs& a, DaemonClient& c) {
  auto reply = c.call("PUT", "/v1/sessions/" + url_path_escape(a.id) + "/files/" + url_path_escape(a.remote) +
                                 "?mode=" + a.mode,
                      read_user_file(a.local, kMaxUploadFileBytes, "the file"), "application/octet-stream");
  if (a.json) std::cout << reply.body;
  return kExitOk;
}

int get(const SessionArgs& a, DaemonClient& c) {
  auto reply = c.call("GET", "/v1/sessions/" + url_path_escape(a.id) + "/files/" + url_path_escape(a.remote));
  if (a.local.empty() || a.local == "-") {
    write_all(STDOUT_FILENO, reply.body);
    return kExitOk;
  }
  std::ofstream out(a.local, std::ios::binary | std::ios::trunc);
  out.write(reply.body.data(), static_cast<std::streamsize>(reply.body.size()));
  if (!out.flush()) throw Error(ErrorKind::invalid_input, "cannot write " + a.local);
  return kExitOk;
}

int list(const SessionArgs& a, DaemonClient& c) {
  if (!a.id.empty()) {
    auto r = c.call_json("GET", "/v1/sessions/" + url_path_escape(a.id) + "/files?dir=" + url_path_escape(a.dir));
    if (a.json) {
      std::cout << dump_json(r) << std::endl;
      return kExitOk;
    }
    for (const auto& e : r["entries"]) {
      std::printf("%-8s %10llu  %s\n", e.value("type", "").c_str(), static_cast<unsigned long long>(e.value("size", 0ull)),
                  e.value("name", "").c_str());
    }
    return kExitOk;
  }
  auto r = c.call_json("GET", "/v1/sessions");
  if (a.json) {
    std::cout << dump_json(r["sessions"]) << std::endl;
    return kExitOk;
  }
  std::printf("%-32s  %-10s  %-5s  %-6s  %s\n", "ID", "LANGUAGE", "EXECS", "STATE", "CREATED");
  for (const auto& s : r["sessions"]) {
    std::printf("%-32s  %-10s  %-5u  %-6s  %s\n", s.value("id", "").c_str(), s.value("language", "").c_str(),
                s.value("execs", 0u), s.value("busy", false) ? "busy" : "idle", s.value("created_at", "").c_str());
  }
  return kExitOk;
}

int remove(const SessionArgs& a, DaemonClient& c) {
  for (const auto& id : a.ids) c.call("DELETE", "/v1/sessions/" + url_path_escape(id));
  return kExitOk;
}

void add(CLI::App& parent, const std::shared_ptr<SessionArgs>& args, const char* name, const char* help,
         int (*fn)(const SessionArgs&, DaemonClient&), const std::function<void(CLI::App&)>& options) {
  CLI::App* cmd = parent.add_subcommand(name, help);
  cmd->add_option("--socket", args->socket, "The daemon's socket ($VIAL_SOCKET or the default)");
  cmd->add_flag("--json", args->json, "Print JSON");
  options(*cmd);
  cmd->callback([args, fn] { throw CLI::RuntimeError(guarded_command(*args, [&](DaemonClient& c) { return fn(*args, c); })); });
}

}  // namespace

void add_session_command(CLI::App& app) {
  auto a = std::make_shared<SessionArgs>();
  CLI::App* cmd = app.add_subcommand("session", "Sessions of a running `vial serve`: a sandbox kept across calls");
  cmd->require_subcommand(1);
  cmd->footer(
      "Example:\n"
      "  id=$(vial session create -l python)\n"
      "  vial session exec $id -c 'x = 41'\n"
      "  vial session exec $id -c 'print(x + 1)'     # 42: state is kept\n"
      "  vial session put $id data.csv data.csv && vial session ls $id\n"
      "  vial session rm $id\n"
      "  vial session create -l python --allow-host pypi.org --allow-host '*.pythonhosted.org' -p 8000:8000\n" +
      std::string(kNetworkHelp));
  add(*cmd, a, "create", "Create a session; prints its id", create, [a](CLI::App& c) {
    c.add_option("-l,--language", a->language, "python, javascript or shell")->required();
    c.add_option("--idle-timeout", a->idle_timeout_s, "Seconds of inactivity before the session is deleted")
        ->capture_default_str();
    add_network_options(&c, a->net, /*ports=*/true);
  });
  add(*cmd, a, "exec", "Run code in a session (Python keeps variables between calls)", exec, [a](CLI::App& c) {
    c.add_option("id", a->id, "Session id")->required();
    c.add_option("-c,--code", a->code, "Code to run");
    c.add_option("file", a->file, "File with the code to run (instead of -c)");
    c.add_option("-t,--timeout", a->timeout_s, "Seconds before the program is killed")->capture_default_str();
    c.add_option("-e,--env", a->env, "Environment variable KEY=VALUE (repeatable)")->allow_extra_args(false);
    c.add_option("-w,--workdir", a->cwd, "Working directory in the guest");
    c.add_flag("-i,--stdin", a->forward_stdin, "Send vial's stdin to the program");
  });
  add(*cmd, a, "put", "Upload a local file into the session's home", put, [a](CLI::App& c) {
    c.add_option("id", a->id, "Session id")->required();
    c.add_option("local", a->local, "Local file")->required();
    c.add_option("remote", a->remote, "Path in the sandbox, relative to its home")->required();
    c.add_option("--mode", a->mode, "Octal permissions")->capture_default_str();
  });
  add(*cmd, a, "get", "Download a file from the session (to stdout without LOCAL)", get, [a](CLI::App& c) {
    c.add_option("id", a->id, "Session id")->required();
    c.add_option("remote", a->remote, "Path in the sandbox, relative to its home")->required();
    c.add_option("local", a->local, "Local file to write");
  });
  add(*cmd, a, "ls", "List sessions, or the files of one session", list, [a](CLI::App& c) {
    c.add_option("id", a->id, "Session id: list its files");
    c.add_option("--dir", a->dir, "Directory to list, relative to the sandbox home");
  });
  add(*cmd, a, "rm", "Delete sessions and their VMs", remove, [a](CLI::App& c) {
    c.add_option("ids", a->ids, "Session ids")->required();
  });
}

}  // namespace vial::cli
