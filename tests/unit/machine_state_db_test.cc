// state.db: schema version, names, runtime fields, and many processes writing at once.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "machine/state_db.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace vial::machine {
namespace {

class StateDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vial-statedb-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path file() const { return dir_ / "state.db"; }

  static MachineRecord record(const std::string& name) {
    MachineRecord r;
    r.name = name;
    r.image = "python";
    r.config.cpus = 2;
    r.created_at = now_iso8601();
    return r;
  }

  fs::path dir_;
};

TEST_F(StateDbTest, FreshDatabaseHasTheCurrentSchema) {
  StateDb db(file());
  EXPECT_EQ(db.schema_version(), StateDb::current_schema_version());
  EXPECT_TRUE(db.list().empty());
}

TEST_F(StateDbTest, RecordsSurviveReopening) {
  {
    StateDb db(file());
    db.insert(record("b"));
    db.insert(record("a"));
  }
  StateDb db(file());
  EXPECT_EQ(db.schema_version(), StateDb::current_schema_version());
  auto all = db.list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "a");  // ordered by name
  EXPECT_EQ(all[1].config.cpus, 2u);
  EXPECT_EQ(all[1].image, "python");
}

TEST_F(StateDbTest, NameTaken) {
  StateDb db(file());
  db.insert(record("x"));
  try {
    db.insert(record("x"));
    FAIL() << "inserted twice";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::conflict);
    EXPECT_NE(std::string(e.what()).find("name taken"), std::string::npos);
  }
}

TEST_F(StateDbTest, RunningThenStopped) {
  StateDb db(file());
  db.insert(record("m"));
  db.set_running("m", 10, "111", 20, "222", "2026-01-01T00:00:00Z");
  auto r = db.find("m");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->supervisor_pid, 10);
  EXPECT_EQ(r->qemu_start, "222");
  EXPECT_EQ(r->started_at, "2026-01-01T00:00:00Z");
  db.set_stopped("m", "QEMU was killed");
  r = db.find("m");
  EXPECT_EQ(r->supervisor_pid, 0);
  EXPECT_EQ(r->qemu_pid, 0);
  EXPECT_EQ(r->last_error, "QEMU was killed");
  EXPECT_EQ(r->started_at, "2026-01-01T00:00:00Z");  // kept: the machine has run before
  EXPECT_TRUE(db.remove("m"));
  EXPECT_FALSE(db.remove("m"));
  EXPECT_FALSE(db.find("m"));
}

TEST_F(StateDbTest, NewerSchemaIsRefused) {
  if (std::system("sqlite3 -version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no sqlite3 CLI";
  { StateDb db(file()); }
  ASSERT_EQ(std::system(("sqlite3 " + file().string() + " 'UPDATE schema_version SET version = 999'").c_str()), 0);
  try {
    StateDb db(file());
    FAIL() << "opened a database from the future";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("upgrade vial"), std::string::npos);
  }
}

// Processes creating machines at once (a fresh database included): every distinct name
// lands, and of those racing for one name exactly one wins.
TEST_F(StateDbTest, ConcurrentProcesses) {
  constexpr int kProcs = 6;
  std::vector<pid_t> pids;
  for (int i = 0; i < kProcs; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int code = 0;
      try {
        StateDb db(file());
        for (int j = 0; j < 20; ++j) db.insert(record("p" + std::to_string(i) + "-" + std::to_string(j)));
        try {
          db.insert(record("contested"));
          code = 10;  // won
        } catch (const Error& e) {
          code = e.kind() == ErrorKind::conflict ? 20 : 1;
        }
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  int winners = 0;
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_NE(WEXITSTATUS(status), 1) << "a process failed";
    winners += WEXITSTATUS(status) == 10;
  }
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(StateDb(file()).list().size(), static_cast<size_t>(kProcs * 20 + 1));
}

}  // namespace
}  // namespace vial::machine
