// Machine state in SQLite ($VIAL_HOME/state.db): one row per machine. WAL mode and a busy
// timeout let many vial processes (CLIs, supervisors) use it at once; the schema carries a
// version and is upgraded by ordered migrations, so machines survive vial upgrades.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "machine/machine_config.h"

struct sqlite3;

namespace vial::machine {

struct MachineRecord {
  std::string name;
  std::string image;       // what it was created from: an image name ("python") or a pack path
  MachineConfig config;
  std::string created_at;  // ISO 8601, UTC
  // Written by the machine's supervisor while it runs; pids are 0 when it does not.
  // Start times (process_start_time) tell a live process from a reused pid.
  int supervisor_pid = 0;
  std::string supervisor_start;
  int qemu_pid = 0;
  std::string qemu_start;
  std::string started_at;  // last start, ISO 8601; empty if never started
  std::string last_error;  // why the last run ended badly; empty after a clean stop
};

class StateDb final {
 public:
  // Opens (creating if needed) and migrates to the current schema. Throws Error.
  explicit StateDb(const std::filesystem::path& file);
  StateDb(const StateDb&) = delete;
  StateDb& operator=(const StateDb&) = delete;
  ~StateDb();

  // The schema version this build writes (the number of migrations).
  static int current_schema_version();
  int schema_version();

  // Throws Error(invalid_input) "name taken" when a machine of that name exists.
  void insert(const MachineRecord& record);
  std::optional<MachineRecord> find(const std::string& name);
  std::vector<MachineRecord> list();  // ordered by name
  void set_running(const std::string& name, int supervisor_pid, const std::string& supervisor_start, int qemu_pid,
                   const std::string& qemu_start, const std::string& started_at);
  void set_config(const std::string& name, const MachineConfig& config);
  // Clears the pids; `error` (empty for a clean stop) becomes last_error.
  void set_stopped(const std::string& name, const std::string& error);
  // Returns false if there was no such machine.
  bool remove(const std::string& name);

 private:
  void migrate();
  sqlite3* db_ = nullptr;
};

// The current time as ISO 8601 UTC ("2026-05-27T08:11:36Z").
std::string now_iso8601();

}  // namespace vial::machine
