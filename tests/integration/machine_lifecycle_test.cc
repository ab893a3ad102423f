// `vial machine ...` end to end: the real binary, real microVMs (TCG where KVM is unusable),
// one machine booted at a time, a private VIAL_HOME per test. TearDown (VialHomeTest) checks
// that no QEMU process, run folder or overlay is left.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_harness.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace vial::test {
namespace {

bool process_alive(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && stat.size() > paren + 2 && stat[paren + 2] != 'Z';
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class MachineTest : public VialHomeTest {
 protected:
  void SetUp() override {
    VialHomeTest::SetUp();
    // Boot snapshots are pruned when this home's last machine goes: keep them out of the
    // templates shared with other tests (and with the machines of this host's own home).
    private_dir("templates");
  }
  void TearDown() override {
    // A failed test may leave a machine running: delete it, so the leak checks see the truth.
    for (const auto& m : list()) vial({"machine", "delete", "-f", m.at("name").get<std::string>()});
    VialHomeTest::TearDown();
  }

  // The boot snapshot folders in this home's templates/ (not the lock files).
  std::vector<fs::path> boot_snapshots() const {
    std::vector<fs::path> found;
    for (const auto& e : fs::directory_iterator(home() / "templates")) {
      if (e.is_directory() && e.path().filename().string().rfind("machine-", 0) == 0) found.push_back(e.path());
    }
    return found;
  }
  nlohmann::json list() const {
    auto r = vial({"machine", "ls", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_array()) << r.describe();
    return j.is_array() ? j : nlohmann::json::array();
  }
  nlohmann::json status(const std::string& name) const {
    auto r = vial({"machine", "status", "--name", name, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    return nlohmann::json::parse(r.out, nullptr, false);
  }
  // `vial machine exec --name NAME -- ARGV...`
  CliResult exec(const std::string& name, std::vector<std::string> argv, std::vector<std::string> flags = {},
                 CliOptions opts = {}) const {
    std::vector<std::string> args = {"machine", "exec", "--name", name};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back("--");
    args.insert(args.end(), argv.begin(), argv.end());
    CliOptions o = options();
    o.stdin_data = opts.stdin_data;
    return vial(args, o);
  }
  void create_and_start(const std::string& name, const std::string& smolfile = {}) {
    std::vector<std::string> args = {"machine", "create"};
    if (!smolfile.empty()) {
      std::ofstream(home() / "Smolfile") << smolfile;
      args.insert(args.end(), {"--smolfile", (home() / "Smolfile").string()});
    }
    args.push_back(name);
    auto r = vial(args);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    r = vial({"machine", "start", "--name", name});
    ASSERT_EQ(r.exit_code, 0) << r.describe();
  }
  void expect_error(const CliResult& r, const std::string& needle) const {
    EXPECT_NE(r.exit_code, 0) << r.describe();
    EXPECT_FALSE(r.deadline_hit) << r.describe();
    EXPECT_NE(r.err.find(needle), std::string::npos) << "wanted '" << needle << "' in:\n" << r.describe();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line on stderr:\n" << r.describe();
  }
};

TEST_F(MachineTest, LifeCycleWithEveryArgvShape) {
  VIAL_REQUIRE_IMAGE("python");
  create_and_start("life", R"(
cpus = 2
memory = 384
env = ["GREETING=hello", "MODE=config"]
workdir = "/home/sandbox"
init = ["echo booted >> /home/sandbox/init.log"]
)");
  auto s = status("life");
  EXPECT_EQ(s["state"], "running") << s;
  EXPECT_EQ(s["cpus"], 2);
  EXPECT_EQ(s["memory_mib"], 384);
  EXPECT_EQ(s["image"], "python");
  ASSERT_TRUE(s["pid"].is_number()) << s;
  EXPECT_TRUE(process_alive(s["pid"].get<int>()));

  // The exec triple: exit code, stdout and stderr byte-exact.
  auto r = exec("life", {"sh", "-c", "printf 'out\\n\\001\\377'; printf err >&2; exit 42"});
  EXPECT_EQ(r.exit_code, 42) << r.describe();
  EXPECT_EQ(r.out, "out\n\001\377");
  EXPECT_EQ(r.err, "err");

  // Config env and workdir, overridden per exec; init ran once.
  r = exec("life", {"sh", "-c", "echo $GREETING $MODE; pwd; cat init.log"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "hello config\n/home/sandbox\nbooted\n");
  r = exec("life", {"sh", "-c", "echo $MODE $EXTRA; pwd"}, {"-e", "MODE=flag", "-e", "EXTRA=x=y", "-w", "/tmp"});
  EXPECT_EQ(r.out, "flag x=y\n/tmp\n") << r.describe();

  // Arguments that look like flags stay the program's after --.
  r = exec("life", {"ls", "-d", "/"});
  EXPECT_EQ(r.out, "/\n") << r.describe();

  // --timeout in every spelling; an expired one exits 124.
  for (const char* t : {"30", "30s", "2m", "1h"}) {
    EXPECT_EQ(exec("life", {"true"}, {"--timeout", t}).exit_code, 0) << t;
  }
  EXPECT_EQ(exec("life", {"sleep", "30"}, {"--timeout", "1s"}).exit_code, 124);
  expect_error(exec("life", {"true"}, {"--timeout", "soon"}), "not a duration");

  // -i streams stdin.
  CliOptions in;
  in.stdin_data = std::string("line one\nline two\n");
  r = exec("life", {"wc", "-l"}, {"-i"}, in);
  EXPECT_EQ(r.out, "2\n") << r.describe();

  // Several execs at once on one machine.
  auto a = start_vial({"machine", "exec", "--name", "life", "--", "sh", "-c", "sleep 2; echo a"}, options());
  auto b = start_vial({"machine", "exec", "--name", "life", "--", "sh", "-c", "sleep 2; echo b"}, options());
  auto ra = a->finish();
  auto rb = b->finish();
  EXPECT_EQ(ra.out, "a\n") << ra.describe();
  EXPECT_EQ(rb.out, "b\n") << rb.describe();

  expect_error(vial({"machine", "start", "--name", "life"}), "already running");

  // Disk contents survive stop/start; init runs again at the next start.
  EXPECT_EQ(exec("life", {"sh", "-c", "echo persisted > /home/sandbox/data"}).exit_code, 0);
  r = vial({"machine", "stop", "--name", "life"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(status("life")["state"], "stopped");
  EXPECT_TRUE(wait_no_qemu("vial-machine-life", 10s).empty());
  expect_error(vial({"machine", "stop", "--name", "life"}), "not running");
  expect_error(exec("life", {"true"}), "not running");
  r = vial({"machine", "start", "--name", "life"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = exec("life", {"sh", "-c", "cat /home/sandbox/data; cat /home/sandbox/init.log"});
  EXPECT_EQ(r.out, "persisted\nbooted\nbooted\n") << r.describe();

  // delete -f stops it first; nothing is left: no QEMU, no supervisor, no socket, no folder.
  s = status("life");
  int qemu = s["pid"].get<int>();
  int supervisor = s["supervisor_pid"].get<int>();
  r = vial({"machine", "delete", "-f", "life"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_FALSE(process_alive(qemu));
  EXPECT_FALSE(process_alive(supervisor));
  EXPECT_FALSE(fs::exists(home() / "machines" / "life"));
  EXPECT_TRUE(list().empty());
  expect_error(vial({"machine", "status", "--name", "life"}), "unknown machine");
}

TEST_F(MachineTest, CopyFilesAndDirectoriesBothWays) {
  VIAL_REQUIRE_IMAGE("python");
  create_and_start("cp1");
  // A binary file with every byte value, and a tree with modes.
  std::string blob(300 * 1024, '\0');
  std::mt19937 rng(7);
  for (auto& c : blob) c = static_cast<char>(rng());
  std::ofstream(home() / "blob.bin", std::ios::binary) << blob;
  fs::create_directories(home() / "tree" / "sub");
  std::ofstream(home() / "tree" / "run.sh") << "#!/bin/sh\necho ran\n";
  fs::permissions(home() / "tree" / "run.sh", fs::perms(0750));
  std::ofstream(home() / "tree" / "sub" / "data.txt") << "data\n";
  fs::permissions(home() / "tree" / "sub" / "data.txt", fs::perms(0604));

  auto r = vial({"machine", "cp", (home() / "blob.bin").string(), "cp1:/home/sandbox/blob.bin"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = vial({"machine", "cp", (home() / "tree").string(), "cp1:/home/sandbox/tree"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = exec("cp1", {"sh", "-c", "/home/sandbox/tree/run.sh; stat -c %a /home/sandbox/tree/sub/data.txt; "
                               "md5sum < /home/sandbox/blob.bin"});
  EXPECT_EQ(r.out.substr(0, 8), "ran\n604\n") << r.describe();

  r = vial({"machine", "cp", "cp1:/home/sandbox/blob.bin", (home() / "blob.back").string()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(read_file(home() / "blob.back"), blob);
  r = vial({"machine", "cp", "cp1:/home/sandbox/tree", (home() / "tree.back").string()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(read_file(home() / "tree.back" / "sub" / "data.txt"), "data\n");
  EXPECT_EQ(fs::status(home() / "tree.back" / "run.sh").permissions() & fs::perms::all, fs::perms(0750));

  expect_error(vial({"machine", "cp", (home() / "blob.bin").string(), (home() / "x").string()}), "exactly one");
  expect_error(vial({"machine", "cp", "cp1:/a", "cp1:/b"}), "exactly one");
  expect_error(vial({"machine", "cp", "", "cp1:/b"}), "empty");
  expect_error(vial({"machine", "cp", (home() / "blob.bin").string(), "cp1:relative"}), "absolute");
  r = vial({"machine", "cp", "cp1:/no/such/file", (home() / "y").string()});
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_FALSE(r.deadline_hit) << r.describe();
}

TEST_F(MachineTest, KilledQemuIsNotAGhostAndStartWorksAgain) {
  VIAL_REQUIRE_IMAGE("python");
  create_and_start("victim");
  int qemu = status("victim")["pid"].get<int>();
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);
  nlohmann::json s;
  for (auto until = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < until;) {
    s = status("victim");
    if (s["state"] != "running") break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(s["state"] == "error" || s["state"] == "stopped") << s;
  EXPECT_TRUE(s["pid"].is_null()) << s;
  if (s["state"] == "error") {
    EXPECT_TRUE(s["error"].is_string()) << s;
  }
  auto r = vial({"machine", "start", "--name", "victim"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  r = exec("victim", {"echo", "back"});
  EXPECT_EQ(r.out, "back\n") << r.describe();
}

TEST_F(MachineTest, ConcurrentCreates) {
  VIAL_REQUIRE_IMAGE("python");
  // Different names at once: both work.
  auto a = start_vial({"machine", "create", "one"}, options());
  auto b = start_vial({"machine", "create", "two"}, options());
  auto ra = a->finish();
  auto rb = b->finish();
  EXPECT_EQ(ra.exit_code, 0) << ra.describe();
  EXPECT_EQ(rb.exit_code, 0) << rb.describe();
  // The same name at once: exactly one wins, the other says so.
  std::vector<std::unique_ptr<CliProcess>> racers;
  for (int i = 0; i < 3; ++i) racers.push_back(start_vial({"machine", "create", "same"}, options()));
  int won = 0;
  for (auto& p : racers) {
    auto r = p->finish();
    if (r.exit_code == 0) {
      ++won;
    } else {
      expect_error(r, "name taken");
    }
  }
  EXPECT_EQ(won, 1);
  auto names = list();
  ASSERT_EQ(names.size(), 3u);
  for (const auto& m : names) EXPECT_EQ(m["state"], "created") << m;
}

TEST_F(MachineTest, ErrorsAreOneLineAndNonZero) {
  VIAL_REQUIRE_IMAGE("python");
  expect_error(vial({"machine", "create", "Bad_Name"}), "invalid name");
  expect_error(vial({"machine", "start", "--name", "ghost"}), "unknown machine");
  expect_error(vial({"machine", "stop", "--name", "ghost"}), "unknown machine");
  expect_error(vial({"machine", "delete", "-f", "ghost"}), "unknown machine");
  expect_error(exec("ghost", {"true"}), "unknown machine");
  std::ofstream(home() / "bad.toml") << "cpus = 2\nvolumes = [\"/a:/b\"]\n";
  expect_error(vial({"machine", "create", "--smolfile", (home() / "bad.toml").string(), "m"}), "volumes");
  std::ofstream(home() / "typo.toml") << "cpu = 2\n";
  expect_error(vial({"machine", "create", "--vialfile", (home() / "typo.toml").string(), "m"}), "'cpu'");
  expect_error(vial({"machine", "create", "--smolfile", (home() / "missing.toml").string(), "m"}), "cannot read");

  // NAME before the flags works too; a bad network value in the file is named at create.
  std::ofstream(home() / "net.toml") << "[network]\nallow_hosts = [\"pypi.org\"]\n";
  auto r = vial({"machine", "create", "netted", "--smolfile", (home() / "net.toml").string()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  expect_error(vial({"machine", "create", "netted"}), "name taken");
  EXPECT_EQ(status("netted")["state"], "created");
  std::ofstream(home() / "badnet.toml") << "[network]\nallow_cidrs = [\"10.0.0.1/8\"]\n";
  expect_error(vial({"machine", "create", "badnet", "--smolfile", (home() / "badnet.toml").string()}), "10.0.0.1/8");
  r = vial({"machine", "delete", "netted"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
}


size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Starts after the first restore the machine's boot snapshot (built by the first start), and
// each restore gets its own entropy and the host's time, not the snapshot's.
TEST_F(MachineTest, RestartsFromItsBootSnapshotWithFreshEntropyAndTime) {
  VIAL_REQUIRE_IMAGE("python");
  create_and_start("snap");
  const fs::path log = home() / "machines" / "snap" / "supervisor.log";
  const std::string probe = "cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1; date +%s";
  auto first = exec("snap", {"sh", "-c", probe});
  ASSERT_EQ(first.exit_code, 0) << first.describe();
  ASSERT_EQ(vial({"machine", "stop", "--name", "snap"}).exit_code, 0);
  // Long enough that a clock left at the snapshot's time would show.
  std::this_thread::sleep_for(5s);
  auto r = vial({"machine", "start", "--name", "snap"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto second = exec("snap", {"sh", "-c", probe});
  ASSERT_EQ(second.exit_code, 0) << second.describe();
  const long host_now = static_cast<long>(::time(nullptr));

  const std::string text = read_file(log);
  EXPECT_EQ(count_of(text, "template (once"), 1u) << text;
  EXPECT_EQ(count_of(text, "restoring the boot snapshot"), 2u) << text;
  EXPECT_EQ(count_of(text, "booting cold"), 0u) << text;
  std::istringstream a(first.out), b(second.out);
  std::string boot_a, boot_b;
  a >> boot_a;
  b >> boot_b;
  EXPECT_NE(boot_a, boot_b) << "two restores of one snapshot share a boot id";
  std::string rand_a, rand_b, word;
  for (int i = 0; i < 16 && a >> word; ++i) rand_a += word;
  for (int i = 0; i < 16 && b >> word; ++i) rand_b += word;
  EXPECT_EQ(rand_a.size(), 32u) << first.out;
  EXPECT_NE(rand_a, rand_b) << "two restores of one snapshot share /dev/urandom";
  long guest_now = 0;
  b >> guest_now;
  EXPECT_LE(std::labs(guest_now - host_now), 3) << "guest clock " << guest_now << ", host " << host_now;
}

// A damaged snapshot costs one cold boot and is rebuilt at the next start; an agent that can't
// park (recorded in snapshot/unsupported) boots cold every time. No start fails for either.
TEST_F(MachineTest, BootsColdWhenItsSnapshotIsUnusable) {
  VIAL_REQUIRE_IMAGE("python");
  create_and_start("cold");
  ASSERT_EQ(exec("cold", {"sh", "-c", "echo kept > /root/kept"}).exit_code, 0);
  ASSERT_EQ(vial({"machine", "stop", "--name", "cold"}).exit_code, 0);
  const fs::path dir = home() / "machines" / "cold";
  const auto snapshots = boot_snapshots();
  ASSERT_EQ(snapshots.size(), 1u);
  fs::resize_file(snapshots[0] / "state", 100);

  auto start_and_check = [&](const std::string& expect_in_log) {
    auto r = vial({"machine", "start", "--name", "cold"});
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    r = exec("cold", {"cat", "/root/kept"});
    EXPECT_EQ(r.out, "kept\n") << r.describe();
    const std::string text = read_file(dir / "supervisor.log");
    const std::string last_start = text.substr(text.rfind("starting ("));
    EXPECT_NE(last_start.find(expect_in_log), std::string::npos) << last_start;
    ASSERT_EQ(vial({"machine", "stop", "--name", "cold"}).exit_code, 0);
  };
  start_and_check("booting cold, without the boot snapshot");
  EXPECT_FALSE(fs::exists(snapshots[0])) << "the damaged snapshot is gone";
  start_and_check("restoring the boot snapshot");  // rebuilt

  std::ofstream(dir / "no-boot-snapshot") << "its agent cannot park (test)\n";
  start_and_check("booting cold, without the boot snapshot: its agent cannot park (test)");
}

// Machines made from one image share one boot snapshot per shape, which goes with the last of them.
TEST_F(MachineTest, MachinesOfOneImageShareTheirBootSnapshot) {
  VIAL_REQUIRE_IMAGE("python");
  create_and_start("one");
  create_and_start("two");
  auto r = exec("two", {"echo", "two"});
  EXPECT_EQ(r.out, "two\n") << r.describe();
  const std::string log = read_file(home() / "machines" / "two" / "supervisor.log");
  EXPECT_EQ(count_of(log, "template (once"), 0u) << "the second machine built its own snapshot:\n" << log;
  EXPECT_EQ(count_of(log, "restoring the boot snapshot"), 1u) << log;
  EXPECT_EQ(boot_snapshots().size(), 1u);
  ASSERT_EQ(vial({"machine", "delete", "-f", "one"}).exit_code, 0);
  EXPECT_EQ(boot_snapshots().size(), 1u) << "removed while machine two still uses it";
  ASSERT_EQ(vial({"machine", "delete", "-f", "two"}).exit_code, 0);
  EXPECT_EQ(boot_snapshots().size(), 0u) << "left behind by the last machine that used it";
}

}  // namespace
}  // namespace vial::test
