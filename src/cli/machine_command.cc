// `vial machine ...`: named persistent machines, argv-compatible with the smolvm CLI
// (create NAME / start --name / stop --name / delete -f NAME / exec --name -- ARGV / cp / ls).
#include <cstdint>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/network_options.h"
#include "images/image_store.h"
#include "machine/duration.h"
#include "machine/machine_name.h"
#include "machine/exec_client.h"
#include "machine/machine_access.h"
#include "machine/machine_store.h"
#include "machine/supervisor.h"
#include "net/egress_log.h"
#include "sandbox/guest_files.h"
#include "util/error.h"
#include "util/event_loop.h"

namespace vial::cli {
namespace {

using namespace vial::machine;

// Runs one machine subcommand; ends it with `body`'s exit code, or the error's.
[[noreturn]] void finish(const std::function<int()>& body, bool json = false, int failure_code = kExitFailure) {
  int code;
  try {
    code = body();
  } catch (const std::exception& e) {
    code = report_error(e, json, failure_code);
  }
  throw CLI::RuntimeError(code);
}

// Every command takes the machine's name as --name NAME or as a positional NAME (smolvm uses
// one or the other depending on the command; scripts should not have to remember which).
struct NameArgs {
  std::string flag;
  std::string positional;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--name", flag, "The machine's name");
    cmd->add_option("name", positional, "The machine's name (instead of --name)");
  }
  std::string get() const {
    if (!flag.empty() && !positional.empty() && flag != positional) {
      throw Error(ErrorKind::invalid_input, "two names given ('" + flag + "' and '" + positional + "'): give one");
    }
    if (flag.empty() && positional.empty()) throw Error(ErrorKind::invalid_input, "give the machine's name: --name NAME");
    return flag.empty() ? positional : flag;
  }
};

void print_table(const std::vector<MachineStatus>& machines) {
  std::printf("%-24s %-8s %4s %8s %8s %-21s %s\n", "NAME", "STATE", "CPUS", "MEMORY", "PID", "CREATED", "IMAGE");
  for (const auto& s : machines) {
    std::printf("%-24s %-8s %4u %7uM %8s %-21s %s\n", s.record.name.c_str(), std::string(to_string(s.state)).c_str(),
                s.record.config.cpus, s.record.config.memory_mib, s.pid > 0 ? std::to_string(s.pid).c_str() : "-",
                s.record.created_at.c_str(), s.record.image.c_str());
  }
}

// Machines boot images, never snippets: any image decides the accelerator as well as another.
std::string accel_probe_image(const MachineRecord& record) {
  return is_image_language(record.image) ? record.image : kDefaultMachineImage;
}

void add_create(CLI::App& machine) {
  struct Args {
    std::string name, from, smolfile, vialfile;
    net::NetOptions net;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand("create", "Create a machine (its disk persists until `delete`)");
  cmd->footer("NAME: 1-63 characters a-z 0-9 _ . - starting with a letter or digit; before or after the flags.\n"
              "The config file is TOML with smolvm's Smolfile keys: cpus, memory (MiB), env = [\"K=V\"],\n"
              "workdir, init = [\"cmd\"] (run at every start), net, ports, [network]. See docs/machines.md.\n" +
              std::string(kNetworkHelp) +
              "Examples:\n"
              "  vial machine create --smolfile agent.toml agent-1\n"
              "  vial machine create web --allow-host pypi.org --allow-host '*.pythonhosted.org' -p 8000:8000");
  cmd->add_option("name", a->name, "The machine's name")->required();
  cmd->add_option("--from", a->from, "A pack (.vial / .smolmachine) to boot instead of the python image");
  auto* smol = cmd->add_option("--smolfile", a->smolfile, "Config file (TOML)");
  cmd->add_option("--vialfile", a->vialfile, "Config file (TOML); the same as --smolfile")->excludes(smol);
  add_network_options(cmd, a->net, /*ports=*/true);
  cmd->callback([a] {
    finish([a] {
      CreateOptions options;
      options.network = a->net;
      options.name = a->name;
      if (!a->from.empty()) options.pack = a->from;
      if (!a->smolfile.empty()) options.config_file = a->smolfile;
      if (!a->vialfile.empty()) options.config_file = a->vialfile;
      MachineStore().create(options);
      return kExitOk;
    });
  });
}

void add_start_stop(CLI::App& machine) {
  auto start = std::make_shared<NameArgs>();
  CLI::App* cmd = machine.add_subcommand("start", "Boot a machine; returns once its agent and init commands are done");
  start->add_to(cmd);
  cmd->callback([start] {
    finish([start] {
      MachineStore store;
      MachineRecord record = store.require(start->get());
      store.start(record.name, choose_accel(accel_probe_image(record), /*quiet=*/true));
      return kExitOk;
    });
  });

  auto stop = std::make_shared<NameArgs>();
  cmd = machine.add_subcommand("stop", "Stop a machine: the guest syncs its disks, then QEMU quits (killed after 30 s)");
  stop->add_to(cmd);
  cmd->callback([stop] {
    finish([stop] {
      MachineStore().stop(stop->get());
      return kExitOk;
    });
  });
}

void add_delete(CLI::App& machine) {
  struct Args {
    NameArgs name;
    bool force = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand("delete", "Delete a machine and its disk (-f: stop it first if running)");
  a->name.add_to(cmd);
  cmd->add_flag("-f,--force", a->force, "Stop the machine if it runs");
  cmd->callback([a] {
    finish([a] {
      MachineStore().remove(a->name.get(), a->force);
      return kExitOk;
    });
  });
}

void add_status_ls(CLI::App& machine) {
  struct Args {
    NameArgs name;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand("status", "Show one machine's state (created, running, stopped, error)");
  a->name.add_to(cmd);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a] {
    finish(
        [a] {
          nlohmann::json j = status_json(MachineStore().status(a->name.get()));
          if (a->json) {
            std::cout << dump_json(j) << std::endl;
          } else {
            for (const auto& [key, value] : j.items()) {
              std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
            }
          }
          return kExitOk;
        },
        a->json);
  });

  auto json = std::make_shared<bool>(false);
  cmd = machine.add_subcommand("ls", "List machines (a table, or a JSON list with --json)");
  cmd->alias("list");
  cmd->add_flag("--json", *json, "Print a JSON list of objects: name, state, cpus, memory_mib, pid, created_at, image");
  cmd->callback([json] {
    finish(
        [json] {
          std::vector<MachineStatus> machines = MachineStore().list();
          if (*json) {
            nlohmann::json list = nlohmann::json::array();
            for (const auto& s : machines) list.push_back(status_json(s));
            std::cout << dump_json(list) << std::endl;
          } else {
            print_table(machines);
          }
          return kExitOk;
        },
        *json);
  });
}

void add_exec_shell(CLI::App& machine) {
  struct Args {
    NameArgs name;
    std::vector<std::string> env;
    std::string workdir;
    std::string timeout;
    bool interactive = false;
    std::vector<std::string> command;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand("exec", "Run a command in a running machine; its exit code becomes vial's");
  cmd->footer("stdout and stderr pass through unchanged; a failure of vial itself exits 125, a timeout 124.\n"
              "Example: vial machine exec --name agent-1 -e MODE=fast -w /srv --timeout 2m -- make test");
  cmd->add_option("--name", a->name.flag, "The machine's name")->required();
  cmd->add_option("-e,--env", a->env, "Environment variable KEY=VALUE (repeatable)")->allow_extra_args(false);
  cmd->add_option("-w,--workdir", a->workdir, "Working directory in the guest");
  cmd->add_option("--timeout", a->timeout, "Kill the command after DURATION: 30, 30s, 2m, 1h (default: none)");
  cmd->add_flag("-i,--interactive", a->interactive, "Send vial's stdin to the command");
  cmd->add_option("command", a->command, "The command and its arguments, after --")->required();
  cmd->callback([a] {
    finish(
        [a] {
          MachineStore store;
          MachineRecord record = require_running(store, a->name.get());
          agent::ExecRequest request = base_exec_request(record);
          request.argv = a->command;
          for (const auto& kv : a->env) {
            auto [key, value] = split_env(kv, "-e");
            request.env[key] = value;
          }
          if (!a->workdir.empty()) request.cwd = a->workdir;
          if (!a->timeout.empty()) {
            request.timeout_ms = static_cast<uint32_t>(parse_duration(a->timeout, "--timeout").count());
          }
          return stream_exec(relay_socket(record.name), request, a->interactive);
        },
        false, kExitVialError);
  });

  auto shell = std::make_shared<NameArgs>();
  cmd = machine.add_subcommand("shell", "An interactive shell in a running machine (sh -i; no terminal emulation yet)");
  shell->add_to(cmd);
  cmd->callback([shell] {
    finish(
        [shell] {
          MachineStore store;
          MachineRecord record = require_running(store, shell->get());
          agent::ExecRequest request = base_exec_request(record);
          request.argv = {"/bin/sh", "-i"};
          return stream_exec(relay_socket(record.name), request, /*forward_stdin=*/true);
        },
        false, kExitVialError);
  });
}

// One side of `cp`: NAME:/guest/path, or a host path.
struct CopySide {
  std::string machine;  // empty: the host
  std::string path;
};

CopySide parse_side(const std::string& arg, const std::string& which) {
  if (arg.empty()) throw Error(ErrorKind::invalid_input, "cp: the " + which + " path is empty");
  size_t colon = arg.find(':');
  if (colon == std::string::npos || colon == 0) return {{}, arg};
  CopySide side{arg.substr(0, colon), arg.substr(colon + 1)};
  validate_name(side.machine);
  if (side.path.empty() || side.path[0] != '/') {
    throw Error(ErrorKind::invalid_input,
                "cp: the " + which + " path in the machine must be absolute, like " + side.machine + ":/root/file");
  }
  return side;
}

void add_cp(CLI::App& machine) {
  struct Args {
    std::string src, dst;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand("cp", "Copy a file or directory into or out of a running machine");
  cmd->footer("Exactly one side is NAME:/path. Modes are kept; a directory is copied with its contents.\n"
              "Examples: vial machine cp ./src agent-1:/srv/src   vial machine cp agent-1:/srv/out.tar .");
  cmd->add_option("src", a->src, "Source: a host path or NAME:/path")->required();
  cmd->add_option("dst", a->dst, "Destination: a host path or NAME:/path")->required();
  cmd->callback([a] {
    finish([a] {
      CopySide src = parse_side(a->src, "source");
      CopySide dst = parse_side(a->dst, "destination");
      if (src.machine.empty() == dst.machine.empty()) {
        throw Error(ErrorKind::invalid_input, "cp: exactly one of source and destination must be NAME:/path");
      }
      MachineStore store;
      MachineRecord record = require_running(store, src.machine.empty() ? dst.machine : src.machine);
      run_with_signals([&]() -> boost::asio::awaitable<void> {
        auto agent = co_await connect_machine(record.name);
        // Named values: GCC 12 miscompiles conversions to by-value parameters inside co_await.
        std::filesystem::path host = src.machine.empty() ? src.path : dst.path;
        std::string guest = src.machine.empty() ? dst.path : src.path;
        std::exception_ptr failed;
        try {
          if (src.machine.empty()) {
            co_await copy_in(*agent, host, guest, /*as_root=*/true);
          } else {
            auto skipped = co_await copy_out(*agent, guest, host, /*as_root=*/true);
            for (const auto& link : skipped) {
              std::fprintf(stderr, "vial: not copied, a symlink pointing outside the copied tree: %s\n", link.c_str());
            }
          }
        } catch (...) {
          failed = std::current_exception();
        }
        agent->close();  // on every path: its reader would keep the event loop running
        if (failed) std::rethrow_exception(failed);
      });
      return kExitOk;
    });
  });
}

void add_supervise(CLI::App& machine) {
  struct Args {
    std::string name;
    std::string accel;
    int ready_fd = -1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand("__supervise", "Internal: the process of a running machine");
  cmd->group("");  // hidden: `vial machine start` runs it
  cmd->add_option("name", a->name)->required();
  cmd->add_option("--accel", a->accel)->required()->check(CLI::IsMember({"kvm", "tcg"}));
  cmd->add_option("--ready-fd", a->ready_fd);
  cmd->callback([a] {
    SupervisorOptions options;
    options.name = a->name;
    options.accel = {a->accel == "kvm" ? AccelKind::kvm : AccelKind::tcg, "chosen by vial machine start"};
    options.ready_fd = a->ready_fd;
    throw CLI::RuntimeError(run_supervisor(options));
  });
}

void add_egress_events(CLI::App& machine) {
  struct Args {
    NameArgs name;
    bool json = false;
    size_t limit = 100;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = machine.add_subcommand(
      "egress-events", "Show a machine's network decisions (DNS and connections, allowed and denied)");
  a->name.add_to(cmd);
  cmd->add_flag("--json", a->json, "Print a JSON list (time_ms, proto, name, address, port, allowed, rule, bytes)");
  cmd->add_option("-n,--limit", a->limit, "Show at most this many, the newest")->capture_default_str();
  cmd->footer("Events come from $VIAL_HOME/logs/egress.ndjson, oldest first.\n"
              "Example: vial machine egress-events agent-1 --json | jq 'select(.allowed | not)'");
  cmd->callback([a] {
    finish(
        [a] {
          const std::string name = a->name.get();
          MachineStore().require(name);
          auto events = net::read_egress_events(name, a->limit);
          if (a->json) {
            std::cout << dump_json(nlohmann::json(events)) << std::endl;
            return kExitOk;
          }
          for (const auto& e : events) {
            std::printf("%-13lld %-6s %-5s %-30s %-21s %s (up %llu B, down %llu B)\n",
                        static_cast<long long>(e.value("time_ms", int64_t{0})), e.value("proto", "").c_str(),
                        e.value("allowed", false) ? "allow" : "deny", e.value("name", "").c_str(),
                        (e.value("address", "") + ":" + std::to_string(e.value("port", 0))).c_str(),
                        e.value("rule", "").c_str(), static_cast<unsigned long long>(e.value("bytes_up", uint64_t{0})),
                        static_cast<unsigned long long>(e.value("bytes_down", uint64_t{0})));
          }
          return kExitOk;
        },
        a->json);
  });
}

}  // namespace

void add_machine_command(CLI::App& app) {
  CLI::App* machine = app.add_subcommand("machine", "Named persistent machines (smolvm-compatible argv)");
  machine->footer("Life cycle: create NAME, start --name NAME, exec --name NAME -- CMD..., cp, stop --name NAME,\n"
                  "delete -f NAME; ls --json lists them. Every failure exits non-zero with one line on stderr.");
  machine->require_subcommand(1);
  add_create(*machine);
  add_start_stop(*machine);
  add_delete(*machine);
  add_status_ls(*machine);
  add_exec_shell(*machine);
  add_cp(*machine);
  add_egress_events(*machine);
  add_supervise(*machine);
}

}  // namespace vial::cli
