#include "machine/state_db.h"

#include <sqlite3.h>

#include <chrono>
#include <ctime>
#include <thread>
#include <string_view>

#include "util/error.h"

namespace vial::machine {
namespace {

// Ordered schema migrations: entry i takes the schema from version i to i+1. Append only;
// never edit a migration that has shipped.
constexpr std::string_view kMigrations[] = {
    R"sql(
CREATE TABLE machines (
  name TEXT PRIMARY KEY,
  image TEXT NOT NULL,
  config TEXT NOT NULL,
  created_at TEXT NOT NULL,
  supervisor_pid INTEGER NOT NULL DEFAULT 0,
  supervisor_start TEXT NOT NULL DEFAULT '',
  qemu_pid INTEGER NOT NULL DEFAULT 0,
  qemu_start TEXT NOT NULL DEFAULT '',
  started_at TEXT NOT NULL DEFAULT '',
  last_error TEXT NOT NULL DEFAULT ''
);
)sql",
};

constexpr int kBusyTimeoutMs = 10000;

[[noreturn]] void fail(sqlite3* db, const std::string& what) {
  throw Error(ErrorKind::internal, "state database: " + what + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
}

// One prepared statement, finalized when it goes out of scope.
class Statement final {
 public:
  Statement(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr) != SQLITE_OK) {
      fail(db, "prepare");
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(stmt_); }

  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, int value) {
    sqlite3_bind_int(stmt_, index, value);
    return *this;
  }
  // True when a row is ready, false when done; throws on errors (constraint violations too).
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, "step");
  }
  int extended_code() const { return sqlite3_extended_errcode(db_); }
  std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  int integer(int col) const { return sqlite3_column_int(stmt_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw Error(ErrorKind::internal, "state database: " + msg);
  }
}

constexpr std::string_view kSelect =
    "SELECT name, image, config, created_at, supervisor_pid, supervisor_start, qemu_pid, qemu_start, "
    "started_at, last_error FROM machines";

MachineRecord read_record(const Statement& s) {
  MachineRecord r;
  r.name = s.text(0);
  r.image = s.text(1);
  r.config = nlohmann::json::parse(s.text(2)).get<MachineConfig>();
  r.created_at = s.text(3);
  r.supervisor_pid = s.integer(4);
  r.supervisor_start = s.text(5);
  r.qemu_pid = s.integer(6);
  r.qemu_start = s.text(7);
  r.started_at = s.text(8);
  r.last_error = s.text(9);
  return r;
}

}  // namespace

std::string now_iso8601() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int StateDb::current_schema_version() { return static_cast<int>(std::size(kMigrations)); }

StateDb::StateDb(const std::filesystem::path& file) {
  if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw Error(ErrorKind::unavailable, "cannot open " + file.string() + ": " + msg);
  }
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // Switching a fresh database to WAL while another process does the same can fail with
  // SQLITE_BUSY without consulting the busy handler, so the set-up retries on its own.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  for (;;) {
    try {
      exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;");
      migrate();
      return;
    } catch (...) {
      const int rc = sqlite3_errcode(db_);
      if ((rc == SQLITE_BUSY || rc == SQLITE_LOCKED) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      sqlite3_close(db_);
      throw;
    }
  }
}

StateDb::~StateDb() { sqlite3_close(db_); }

int StateDb::schema_version() {
  Statement s(db_, "SELECT version FROM schema_version");
  return s.step() ? s.integer(0) : 0;
}

void StateDb::migrate() {
  // IMMEDIATE takes the write lock up front, so two processes opening a fresh database
  // migrate one after the other and the second sees the first one's version.
  exec(db_, "BEGIN IMMEDIATE");
  try {
    exec(db_, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    int version = schema_version();
    if (version > current_schema_version()) {
      throw Error(ErrorKind::unavailable, "the state database has schema version " + std::to_string(version) +
                                              ", newer than this vial understands (" +
                                              std::to_string(current_schema_version()) + "): upgrade vial");
    }
    for (int v = version; v < current_schema_version(); ++v) exec(db_, std::string(kMigrations[v]));
    exec(db_, "DELETE FROM schema_version");
    Statement(db_, "INSERT INTO schema_version (version) VALUES (?)").bind(1, current_schema_version()).step();
    exec(db_, "COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void StateDb::insert(const MachineRecord& r) {
  Statement s(db_, "INSERT INTO machines (name, image, config, created_at) VALUES (?, ?, ?, ?)");
  s.bind(1, r.name).bind(2, r.image).bind(3, nlohmann::json(r.config).dump()).bind(4, r.created_at);
  try {
    s.step();
  } catch (const Error&) {
    if (s.extended_code() == SQLITE_CONSTRAINT_PRIMARYKEY) {
      throw Error(ErrorKind::conflict, "name taken: a machine named '" + r.name +
                                                "' exists (pick another name or `vial machine delete -f " + r.name +
                                                "`)");
    }
    throw;
  }
}

std::optional<MachineRecord> StateDb::find(const std::string& name) {
  Statement s(db_, std::string(kSelect) + " WHERE name = ?");
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return read_record(s);
}

std::vector<MachineRecord> StateDb::list() {
  Statement s(db_, std::string(kSelect) + " ORDER BY name");
  std::vector<MachineRecord> out;
  while (s.step()) out.push_back(read_record(s));
  return out;
}

void StateDb::set_running(const std::string& name, int supervisor_pid, const std::string& supervisor_start,
                          int qemu_pid, const std::string& qemu_start, const std::string& started_at) {
  Statement s(db_,
              "UPDATE machines SET supervisor_pid = ?, supervisor_start = ?, qemu_pid = ?, qemu_start = ?, "
              "started_at = ?, last_error = '' WHERE name = ?");
  s.bind(1, supervisor_pid).bind(2, supervisor_start).bind(3, qemu_pid).bind(4, qemu_start).bind(5, started_at);
  s.bind(6, name).step();
}

void StateDb::set_config(const std::string& name, const MachineConfig& config) {
  Statement(db_, "UPDATE machines SET config = ? WHERE name = ?").bind(1, nlohmann::json(config).dump()).bind(2, name).step();
}

void StateDb::set_stopped(const std::string& name, const std::string& error) {
  Statement s(db_,
              "UPDATE machines SET supervisor_pid = 0, supervisor_start = '', qemu_pid = 0, qemu_start = '', "
              "last_error = ? WHERE name = ?");
  s.bind(1, error).bind(2, name).step();
}

bool StateDb::remove(const std::string& name) {
  Statement(db_, "DELETE FROM machines WHERE name = ?").bind(1, name).step();
  return sqlite3_changes(db_) > 0;
}

}  // namespace vial::machine
