// A machine's configuration: smolvm's Smolfile keys as they are (vial calls the same TOML a
// Vialfile). Parsed and validated once at `create`, stored as JSON in the state database.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/policy.h"

namespace vial::machine {

inline constexpr unsigned kDefaultMachineMemoryMib = 512;
inline constexpr unsigned kMaxMachineCpus = 64;
inline constexpr unsigned kMaxMachineMemoryMib = 256 * 1024;

struct MachineConfig {
  unsigned cpus = 1;
  unsigned memory_mib = kDefaultMachineMemoryMib;
  std::map<std::string, std::string> env;  // from env = ["K=V", ...]
  std::string workdir;                     // absolute guest path; empty: the agent's default
  std::vector<std::string> init;           // shell commands run (in order) at every start
  // Network (issue 13): off unless `net = true`, an allow list or a port is given; the same
  // strings as the CLI flags, validated by net::make_policy at create.
  net::NetOptions network;
};

// Parses Smolfile TOML. Throws Error(invalid_input) naming the key (and `source`, the file
// name) for unknown keys, wrong types and bad values; volumes are recognised but rejected as
// not supported yet.
MachineConfig parse_machine_config(std::string_view toml_text, const std::string& source);
// Reads and parses a file; Error(invalid_input) when it can't be read.
MachineConfig load_machine_config(const std::filesystem::path& file);

// Splits "KEY=VALUE" (KEY non-empty); Error(invalid_input) naming `what` otherwise.
std::pair<std::string, std::string> split_env(const std::string& assignment, const std::string& what);

void to_json(nlohmann::json& j, const MachineConfig& c);
void from_json(const nlohmann::json& j, MachineConfig& c);

}  // namespace vial::machine
