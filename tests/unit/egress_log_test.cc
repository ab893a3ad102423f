// The egress log: one JSON line per decision under a private $VIAL_HOME, appended whole by
// many processes, rotated past its size limit, read back bounded and filtered.
#include "net/egress_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <set>

#include <gtest/gtest.h>

namespace fs = std::filesystem;

namespace vial::net {
namespace {

class EgressLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "vial-egress-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    if (const char* old = std::getenv("VIAL_HOME")) old_home_ = old;
    ::setenv("VIAL_HOME", (dir_ / "home").c_str(), 1);
  }
  void TearDown() override {
    if (old_home_) {
      ::setenv("VIAL_HOME", old_home_->c_str(), 1);
    } else {
      ::unsetenv("VIAL_HOME");
    }
    fs::remove_all(dir_);
  }

  static EgressEvent event(const std::string& machine, const std::string& name, int64_t t = 1) {
    EgressEvent e;
    e.time_ms = t;
    e.vm = "vm-" + machine;
    e.machine = machine;
    e.proto = "tcp";
    e.name = name;
    e.address = "151.101.0.223";
    e.port = 443;
    e.allowed = true;
    e.rule = "allow-host " + name;
    e.bytes_up = 10;
    e.bytes_down = 20;
    return e;
  }

  static std::vector<std::string> names(const std::vector<nlohmann::json>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.at("name").get<std::string>());
    return out;
  }

  static void ensure_logs_dir() { fs::create_directories(egress_log_path().parent_path()); }

  static void write_file(const fs::path& path, const std::string& content) {
    std::ofstream(path, std::ios::binary) << content;
  }

  fs::path dir_;
  std::optional<std::string> old_home_;
};

TEST_F(EgressLogTest, EventJsonHasEveryField) {
  EgressEvent e = event("m1", "pypi.org", 1700000000123);
  nlohmann::json j = to_json(e);
  EXPECT_EQ(j, nlohmann::json({{"time_ms", 1700000000123},
                               {"vm", "vm-m1"},
                               {"machine", "m1"},
                               {"proto", "tcp"},
                               {"name", "pypi.org"},
                               {"address", "151.101.0.223"},
                               {"port", 443},
                               {"allowed", true},
                               {"rule", "allow-host pypi.org"},
                               {"bytes_up", 10},
                               {"bytes_down", 20}}));
}

TEST_F(EgressLogTest, AppendsOneLinePerEventPrivately) {
  EXPECT_EQ(egress_log_path(), dir_ / "home" / "logs" / "egress.ndjson");
  append_egress_event(event("", "a.com"));
  append_egress_event(event("m1", "b.com"));

  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "home" / "logs").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(egress_log_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  std::ifstream in(egress_log_path());
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[1]), to_json(event("m1", "b.com")));
}

TEST_F(EgressLogTest, NonUtf8NamesDoNotBreakTheLine) {
  append_egress_event(event("m", "bad\xff\xfe"));
  auto events = read_egress_events("", 10);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].at("machine"), "m");
}

TEST_F(EgressLogTest, ReadsFilterByMachineAndKeepTheNewest) {
  EXPECT_TRUE(read_egress_events("", 10).empty());  // no log yet
  for (int i = 0; i < 6; ++i) append_egress_event(event(i % 2 ? "odd" : "even", "n" + std::to_string(i)));

  EXPECT_EQ(names(read_egress_events("", 100)), (std::vector<std::string>{"n0", "n1", "n2", "n3", "n4", "n5"}));
  EXPECT_EQ(names(read_egress_events("odd", 100)), (std::vector<std::string>{"n1", "n3", "n5"}));
  EXPECT_EQ(names(read_egress_events("odd", 2)), (std::vector<std::string>{"n3", "n5"}));
  EXPECT_EQ(names(read_egress_events("", 1)), (std::vector<std::string>{"n5"}));
  EXPECT_TRUE(read_egress_events("", 0).empty());
  EXPECT_TRUE(read_egress_events("none", 10).empty());
}

TEST_F(EgressLogTest, SkipsLinesThatAreNotJsonObjects) {
  append_egress_event(event("m", "first"));
  {
    std::ofstream out(egress_log_path(), std::ios::app);
    out << "not json\n[1,2]\n{\"machine\": 5, \"name\": \"typed\"}\n\n{\"truncated\": \n";
  }
  append_egress_event(event("m", "last"));
  EXPECT_EQ(names(read_egress_events("m", 10)), (std::vector<std::string>{"first", "last"}));
  EXPECT_EQ(read_egress_events("", 10).size(), 3u);  // the object with a bad "machine" too
}

TEST_F(EgressLogTest, RotatesPastTheLimit) {
  append_egress_event(event("m", "old"));
  // Padding (sparse zeros, then a newline) up to one byte under the limit.
  ASSERT_EQ(::truncate(egress_log_path().c_str(), kMaxEgressLogBytes - 2), 0);
  std::ofstream(egress_log_path(), std::ios::app) << "\n";
  append_egress_event(event("m", "still-here"));  // under the limit before this write
  EXPECT_FALSE(fs::exists(egress_log_path().string() + ".1"));

  write_file(egress_log_path().string() + ".1", to_json(event("m", "replaced")).dump() + "\n");
  append_egress_event(event("m", "new"));
  EXPECT_TRUE(fs::exists(egress_log_path().string() + ".1"));
  EXPECT_LT(fs::file_size(egress_log_path()), 1000u);
  EXPECT_GE(fs::file_size(egress_log_path().string() + ".1"), kMaxEgressLogBytes);
  // The padding is one line that is not JSON.
  EXPECT_EQ(names(read_egress_events("m", 10)), (std::vector<std::string>{"old", "still-here", "new"}));
}

TEST_F(EgressLogTest, ReadingIsBoundedAndKeepsTheNewest) {
  append_egress_event(event("m", "current"));
  // A rotated file past the whole read budget: only its tail is read.
  const std::string rotated = egress_log_path().string() + ".1";
  const std::string head_line = to_json(event("m", "too-old")).dump() + "\n";
  const std::string tail_line = "\n" + to_json(event("m", "rotated-tail")).dump() + "\n";
  write_file(rotated, head_line);
  ASSERT_EQ(::truncate(rotated.c_str(), 2 * kMaxEgressLogBytes), 0);
  {
    std::ofstream out(rotated, std::ios::app | std::ios::binary);
    out << tail_line;
  }
  EXPECT_EQ(names(read_egress_events("", 10)), (std::vector<std::string>{"rotated-tail", "current"}));
}

TEST_F(EgressLogTest, RefusesFilesThatAreNotRegular) {
  ensure_logs_dir();
  write_file(egress_log_path().string() + ".1", to_json(event("m", "rotated")).dump() + "\n");
  ASSERT_EQ(::mkfifo(egress_log_path().c_str(), 0600), 0);
  // A FIFO would block a plain open() for reading forever.
  EXPECT_EQ(names(read_egress_events("", 10)), (std::vector<std::string>{"rotated"}));
}

TEST_F(EgressLogTest, WriteFailuresNeverThrow) {
  ::testing::internal::CaptureStderr();
  ensure_logs_dir();
  fs::create_directory(egress_log_path());  // a directory where the file should be
  EXPECT_NO_THROW(append_egress_event(event("m", "x")));
  write_file(dir_ / "file", "");
  ::setenv("VIAL_HOME", (dir_ / "file").c_str(), 1);  // logs/ cannot be created under a file
  EXPECT_NO_THROW(append_egress_event(event("m", "y")));
  const std::string err = ::testing::internal::GetCapturedStderr();
  // Said once per process, whichever failure came first.
  EXPECT_NE(err.find("egress log"), std::string::npos) << err;
  EXPECT_EQ(err.find("egress log"), err.rfind("egress log")) << err;
}

TEST_F(EgressLogTest, ConcurrentWritersNeverInterleaveLines) {
  constexpr int kWriters = 4;
  constexpr int kEach = 200;
  const std::string filler(3000, 'x');  // long lines: more than a pipe's atomic write
  std::vector<pid_t> children;
  for (int w = 0; w < kWriters; ++w) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int i = 0; i < kEach; ++i) {
        append_egress_event(event("w" + std::to_string(w), std::to_string(i) + filler));
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  auto events = read_egress_events("", kWriters * kEach + 10);
  ASSERT_EQ(events.size(), static_cast<size_t>(kWriters * kEach));
  std::set<std::string> seen;
  for (const auto& e : events) seen.insert(e.at("machine").get<std::string>() + "/" + e.at("name").get<std::string>());
  EXPECT_EQ(seen.size(), static_cast<size_t>(kWriters * kEach));
}

}  // namespace
}  // namespace vial::net
