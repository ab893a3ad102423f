// `vial run` end to end: the real binary, a real microVM (TCG where KVM is unusable), a
// private VIAL_HOME per test. The fixture's TearDown checks that no QEMU process, run folder
// or overlay of the test is left behind.
#include <signal.h>

#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_harness.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace vial::test {
namespace {

class RunCliTest : public VialHomeTest {};

TEST_F(RunCliTest, PythonHelloWorld) {
  VIAL_REQUIRE_IMAGE("python");
  auto r = vial({"run", "-l", "python", "-c", "print(6*7)"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "42\n") << r.describe();
}

TEST_F(RunCliTest, JavascriptHelloWorld) {
  VIAL_REQUIRE_IMAGE("javascript");
  auto r = vial({"run", "-l", "javascript", "-c", "console.log(1+1)"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "2\n") << r.describe();
}

TEST_F(RunCliTest, ShellExitCodeBecomesVialsExitCode) {
  VIAL_REQUIRE_IMAGE("shell");
  auto r = vial({"run", "-l", "shell", "-c", "exit 3"});
  EXPECT_EQ(r.exit_code, 3) << r.describe();
  EXPECT_EQ(r.out, "") << r.describe();
}

TEST_F(RunCliTest, StderrIsSeparateFromStdout) {
  VIAL_REQUIRE_IMAGE("shell");
  auto r = vial({"run", "-l", "shell", "-c", "echo to-out; echo to-err >&2; echo more-out; exit 5"});
  EXPECT_EQ(r.exit_code, 5) << r.describe();
  EXPECT_EQ(r.out, "to-out\nmore-out\n") << r.describe();
  EXPECT_NE(r.err.find("to-err\n"), std::string::npos) << r.describe();
  EXPECT_EQ(r.err.find("out"), std::string::npos) << r.describe();
}

TEST_F(RunCliTest, EnvironmentAndWorkingDirectory) {
  VIAL_REQUIRE_IMAGE("shell");
  auto r = vial({"run", "-l", "shell", "-e", "GREETING=hello world", "-e", "EMPTY=", "-e", "EQ=a=b", "-w", "/tmp",
                 "-c", "echo \"$GREETING\"; echo \"[${EMPTY-unset}]\"; echo \"$EQ\"; pwd"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "hello world\n[]\na=b\n/tmp\n") << r.describe();
}

TEST_F(RunCliTest, StdinIsForwardedWithDashI) {
  VIAL_REQUIRE_IMAGE("python");
  auto opts = options();
  opts.stdin_data = "hello\nworld";
  auto r = vial({"run", "-l", "python", "-i", "-c", "import sys\nd = sys.stdin.read()\nprint(len(d), d.upper())"},
                opts);
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "11 HELLO\nWORLD\n") << r.describe();
}

TEST_F(RunCliTest, UnicodeOutputIsByteExact) {
  VIAL_REQUIRE_IMAGE("python");
  const std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x8E\x89";
  auto r = vial({"run", "-l", "python", "-c", "import sys\nprint('" + text + "')\nprint('" + text +
                                                    "', file=sys.stderr)"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, text + "\n") << r.describe();
  EXPECT_NE(r.err.find(text + "\n"), std::string::npos) << r.describe();
}

TEST_F(RunCliTest, BinaryOutputIsByteExact) {
  VIAL_REQUIRE_IMAGE("python");
  auto r = vial({"run", "-l", "python", "-c",
                 "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 64)\nsys.stdout.flush()"});
  std::string expected;
  for (int rep = 0; rep < 64; ++rep) {
    for (int b = 0; b < 256; ++b) expected.push_back(static_cast<char>(b));
  }
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  ASSERT_EQ(r.out.size(), expected.size()) << r.describe();
  EXPECT_TRUE(r.out == expected) << "binary stdout differs from the 256 byte values";
}

TEST_F(RunCliTest, JsonReportsOutputExitCodeAndTiming) {
  VIAL_REQUIRE_IMAGE("shell");
  auto r = vial({"run", "-l", "shell", "--json", "-c", "echo hi; echo oops >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3) << r.describe();
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << "stdout is not one JSON object: " << r.describe();
  EXPECT_EQ(j.value("stdout", ""), "hi\n");
  EXPECT_EQ(j.value("stderr", ""), "oops\n");
  EXPECT_EQ(j.value("exit_code", -1), 3);
  EXPECT_EQ(j.value("timed_out", true), false);
  EXPECT_EQ(j.value("truncated", true), false);
  ASSERT_TRUE(j.contains("timing") && j["timing"].is_object()) << j.dump();
  const auto& t = j["timing"];
  for (const char* key : {"boot_ms", "exec_ms", "total_ms"}) {
    ASSERT_TRUE(t.contains(key) && t[key].is_number()) << key << " missing in " << j.dump();
    EXPECT_GT(t[key].get<double>(), 0.0) << key;
  }
  EXPECT_GE(t["total_ms"].get<double>(), t["boot_ms"].get<double>() + t["exec_ms"].get<double>() - 1.0);
  EXPECT_LE(t["total_ms"].get<double>(), r.seconds * 1000 + 1.0);
}

TEST_F(RunCliTest, LargeOutputIsTruncatedAtOneMebibyte) {
  VIAL_REQUIRE_IMAGE("python");
  auto r = vial({"run", "-l", "python", "--json", "-t", "60", "-c",
                 "import sys\nfor _ in range(48):\n    sys.stdout.write('x' * 65536)\n"
                 "print('stderr still works', file=sys.stderr)"});
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.describe();
  EXPECT_EQ(j.value("truncated", false), true) << r.describe();
  EXPECT_EQ(j.value("stdout_truncated", false), true) << r.describe();
  EXPECT_EQ(j.value("timed_out", true), false) << r.describe();
  const std::string out = j.value("stdout", "");
  EXPECT_EQ(out.size(), size_t{1} << 20) << "stdout is capped at exactly 1 MiB";
  EXPECT_EQ(out.find_first_not_of('x'), std::string::npos);
}

TEST_F(RunCliTest, TimeoutKillsAnInfiniteLoopWith124) {
  VIAL_REQUIRE_IMAGE("shell");
  auto opts = options();
  opts.deadline = 150s;
  auto r = vial({"run", "-l", "shell", "-t", "2", "-c", "echo started; while :; do :; done"}, opts);
  EXPECT_EQ(r.exit_code, 124) << r.describe();
  EXPECT_FALSE(r.deadline_hit) << r.describe();
  EXPECT_EQ(r.out, "started\n") << r.describe();
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.describe();
  // Boot (seconds under a busy TCG) + 2 s + teardown; far below the host-side grace.
  EXPECT_LT(r.seconds, 100) << r.describe();
}

TEST_F(RunCliTest, CodeFromAFile) {
  VIAL_REQUIRE_IMAGE("python");
  fs::path file = home() / "prog.py";
  std::ofstream(file) << "import sys\nprint('from file', sys.argv[0] != '')\n";
  auto r = vial({"run", "-l", "python", file.string()});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "from file True\n") << r.describe();
}

class RunCliSignalTest : public VialHomeTest {
 protected:
  // Starts `sleep 60` and waits until the guest runs it (its QEMU exists and it printed).
  std::unique_ptr<CliProcess> start_sleeper() {
    auto p = start_vial({"run", "-l", "shell", "-c", "echo booted; sleep 60"}, options());
    EXPECT_TRUE(wait_for_qemu(home().string() + "/", 120s)) << "no QEMU process appeared";
    if (!p->wait_for_stdout("booted\n", 120s)) {
      ADD_FAILURE() << "the program never started: " << p->finish().describe();
      return p;
    }
    p->pump_for(1s);
    return p;
  }
};

TEST_F(RunCliSignalTest, CtrlCStopsTheVmAndExits130) {
  VIAL_REQUIRE_IMAGE("shell");
  auto p = start_sleeper();
  ASSERT_FALSE(HasFailure());
  auto sent = std::chrono::steady_clock::now();
  p->send_signal(SIGINT);
  auto r = p->finish();
  double after_signal = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  EXPECT_EQ(r.exit_code, 130) << r.describe();
  EXPECT_LT(after_signal, 10.0) << "vial took too long to stop after SIGINT";
  // TearDown checks that QEMU, the run folder and the overlay are gone.
}

TEST_F(RunCliSignalTest, OrphansOfAKilledVialAreReapedByTheNextRun) {
  VIAL_REQUIRE_IMAGE("shell");
  auto p = start_sleeper();
  ASSERT_FALSE(HasFailure());
  p->send_signal(SIGKILL);
  auto killed = p->finish();
  EXPECT_EQ(killed.term_signal, SIGKILL);
  // QEMU dies with vial (PR_SET_PDEATHSIG), without any cleanup code running.
  auto left = wait_no_qemu(home().string() + "/", 10s);
  EXPECT_TRUE(left.empty()) << "QEMU survived its SIGKILLed vial";
  // A SIGKILLed vial cannot remove its files: they are there until the next run.
  EXPECT_EQ(dir_entries(home() / "run").size(), 1u);
  EXPECT_EQ(vm_overlays(home()).size(), 1u);

  auto r = vial({"run", "-l", "shell", "-c", "echo ok"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "ok\n") << r.describe();
  // TearDown: the stale run folder and overlay are gone too.
}

}  // namespace
}  // namespace vial::test
