// The egress log: one NDJSON line per network decision (DNS or connection, allowed or
// denied), appended to $VIAL_HOME/logs/egress.ndjson by whichever process owns the VM (the
// CLI, `vial serve`, a machine supervisor). Lines are written with one O_APPEND write each,
// so processes never interleave within a line. The file is rotated to egress.ndjson.1 past
// kMaxEgressLogBytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vial::net {

inline constexpr uint64_t kMaxEgressLogBytes = 32ull << 20;

struct EgressEvent {
  int64_t time_ms = 0;     // unix time, milliseconds
  std::string vm;          // the VM's name
  std::string machine;     // the named machine, or ""
  std::string proto;       // "dns", "tcp" (guest out), "tcp-in" (published port)
  std::string name;        // the name asked for or presented (DNS name, SNI, Host), may be ""
  std::string address;     // IPv4 dotted quad, "" for a refused DNS name
  uint16_t port = 0;
  bool allowed = false;
  std::string rule;        // what decided (net::Verdict::rule)
  uint64_t bytes_up = 0;   // guest -> outside
  uint64_t bytes_down = 0; // outside -> guest
};

nlohmann::json to_json(const EgressEvent& e);

// $VIAL_HOME/logs/egress.ndjson
std::filesystem::path egress_log_path();

// Appends one line (creates logs/ 0700 and the file 0600 as needed). Never throws: a log that
// can't be written must not break the VM's network (it says so on stderr once per process).
void append_egress_event(const EgressEvent& e);

// The events of `machine` (all when empty), oldest first, from the rotated file and the
// current one; at most `limit` of the newest. Lines that are not valid JSON are skipped.
std::vector<nlohmann::json> read_egress_events(const std::string& machine, size_t limit);

}  // namespace vial::net
