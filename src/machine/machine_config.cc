#include "machine/machine_config.h"

#include <algorithm>

#include <toml++/toml.h>

#include "util/error.h"
#include "util/user_file.h"

namespace vial::machine {
namespace {

[[noreturn]] void bad(const std::string& source, const std::string& key, const std::string& problem) {
  throw Error(ErrorKind::invalid_input, source + ": key '" + key + "': " + problem);
}

unsigned read_count(const toml::node& node, const std::string& source, const std::string& key, unsigned min,
                    unsigned max) {
  auto v = node.value<int64_t>();
  if (!node.is_integer() || !v || *v < min || *v > max) {
    bad(source, key, "must be a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return static_cast<unsigned>(*v);
}

std::vector<std::string> read_strings(const toml::node& node, const std::string& source, const std::string& key) {
  const toml::array* array = node.as_array();
  if (!array) bad(source, key, "must be a list of strings, like [\"a\", \"b\"]");
  std::vector<std::string> out;
  for (const toml::node& item : *array) {
    auto s = item.value<std::string>();
    if (!item.is_string() || !s) bad(source, key, "must be a list of strings, like [\"a\", \"b\"]");
    out.push_back(*s);
  }
  return out;
}

std::string read_string(const toml::node& node, const std::string& source, const std::string& key) {
  auto s = node.value<std::string>();
  if (!node.is_string() || !s) bad(source, key, "must be a string");
  return *s;
}

std::map<std::string, std::string> read_env(const toml::node& node, const std::string& source) {
  std::map<std::string, std::string> env;
  for (const std::string& kv : read_strings(node, source, "env")) {
    auto [key, value] = split_env(kv, source + ": key 'env'");
    env[key] = value;  // the last one wins, as in a shell
  }
  return env;
}

// Checks the HOST:GUEST[:ro] / HOST:GUEST shape, then refuses: neither is implemented, and
// silently ignoring a mount or a port would break the machine in confusing ways later.
void reject_unsupported(const toml::node& node, const std::string& source, const std::string& key, bool ro_allowed) {
  const std::vector<std::string> entries = read_strings(node, source, key);
  for (const std::string& entry : entries) {
    size_t parts = 1 + static_cast<size_t>(std::count(entry.begin(), entry.end(), ':'));
    bool ok = parts == 2 || (ro_allowed && parts == 3 && entry.ends_with(":ro"));
    if (!ok || entry.starts_with(':') || entry.find("::") != std::string::npos) {
      bad(source, key, std::string("entries must look like ") + (ro_allowed ? "HOST:GUEST[:ro]" : "HOST:GUEST") +
                           ", got '" + entry + "'");
    }
  }
  if (!entries.empty()) {
    bad(source, key, key + " are not supported yet: remove the key (copy files with `vial machine cp`)");
  }
}

void read_network(const toml::node& node, MachineConfig& c, const std::string& source) {
  const toml::table* table = node.as_table();
  if (!table) bad(source, "network", "must be a table: [network]");
  for (const auto& [k, v] : *table) {
    const std::string key(k.str());
    if (key == "allow_hosts") {
      c.network.allow_hosts = read_strings(v, source, "network.allow_hosts");
    } else if (key == "allow_cidrs") {
      c.network.allow_cidrs = read_strings(v, source, "network.allow_cidrs");
    } else if (key == "add_hosts") {
      c.network.add_hosts = read_strings(v, source, "network.add_hosts");
    } else {
      bad(source, "network." + key, "unknown key (known: allow_hosts, allow_cidrs, add_hosts)");
    }
  }
}

}  // namespace

std::pair<std::string, std::string> split_env(const std::string& assignment, const std::string& what) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0 || assignment.find('\0') != std::string::npos) {
    throw Error(ErrorKind::invalid_input, what + ": expected KEY=VALUE, got '" + assignment + "'");
  }
  return {assignment.substr(0, eq), assignment.substr(eq + 1)};
}

MachineConfig parse_machine_config(std::string_view toml_text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw Error(ErrorKind::invalid_input, source + ":" + std::to_string(e.source().begin.line) +
                                              ": not valid TOML: " + std::string(e.description()));
  }
  MachineConfig c;
  for (const auto& [k, v] : root) {
    const std::string key(k.str());
    if (key == "cpus") {
      c.cpus = read_count(v, source, key, 1, kMaxMachineCpus);
    } else if (key == "memory") {
      c.memory_mib = read_count(v, source, key, 64, kMaxMachineMemoryMib);
    } else if (key == "env") {
      c.env = read_env(v, source);
    } else if (key == "workdir") {
      c.workdir = read_string(v, source, key);
      if (!c.workdir.starts_with('/')) bad(source, key, "must be an absolute path in the guest");
    } else if (key == "init") {
      c.init = read_strings(v, source, key);
    } else if (key == "net") {
      if (!v.is_boolean()) bad(source, key, "must be true or false");
      c.network.net = *v.value<bool>();
    } else if (key == "network") {
      read_network(v, c, source);
    } else if (key == "volumes") {
      reject_unsupported(v, source, key, true);
    } else if (key == "ports") {
      c.network.ports = read_strings(v, source, key);
    } else {
      bad(source, key, "unknown key (known: cpus, memory, env, workdir, init, net, volumes, ports, [network])");
    }
  }
  try {
    net::make_policy(c.network);
  } catch (const Error& e) {
    throw Error(ErrorKind::invalid_input, source + ": " + e.what());
  }
  return c;
}

MachineConfig load_machine_config(const std::filesystem::path& file) {
  return parse_machine_config(read_user_file(file, kMaxConfigFileBytes, "the config file"), file.string());
}

void to_json(nlohmann::json& j, const MachineConfig& c) {
  j = {{"cpus", c.cpus},   {"memory_mib", c.memory_mib}, {"env", c.env},
       {"workdir", c.workdir}, {"init", c.init},         {"net", c.network.net},
       {"allow_hosts", c.network.allow_hosts}, {"allow_cidrs", c.network.allow_cidrs},
       {"add_hosts", c.network.add_hosts}, {"ports", c.network.ports}};
}

void from_json(const nlohmann::json& j, MachineConfig& c) {
  MachineConfig d;
  c.cpus = j.value("cpus", d.cpus);
  c.memory_mib = j.value("memory_mib", d.memory_mib);
  c.env = j.value("env", d.env);
  c.workdir = j.value("workdir", d.workdir);
  c.init = j.value("init", d.init);
  c.network.net = j.value("net", false);
  c.network.allow_hosts = j.value("allow_hosts", std::vector<std::string>{});
  c.network.allow_cidrs = j.value("allow_cidrs", std::vector<std::string>{});
  c.network.add_hosts = j.value("add_hosts", std::vector<std::string>{});
  c.network.ports = j.value("ports", std::vector<std::string>{});
}

}  // namespace vial::machine
