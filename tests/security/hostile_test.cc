// Hostile code in the sandbox: abuse ends within its timeout with a result reported by the
// agent (not a failure of vial), the next run in the same home works, and the guest sees no
// host file, no network and runs the code unprivileged. Real VMs via the `vial` CLI.
#include <signal.h>

#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_harness.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace vial::test {
namespace {

constexpr int kExitVialError = 125;

class HostileTest : public VialHomeTest {
 protected:
  // `vial run --json` with a deadline; the JSON object (or null if stdout was not one).
  nlohmann::json run_json(const std::vector<std::string>& args, CliResult& r, std::chrono::seconds deadline = 200s) {
    auto opts = options();
    opts.deadline = deadline;
    std::vector<std::string> argv = {"run", "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    r = vial(argv, opts);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.describe();
    EXPECT_FALSE(j.contains("error")) << "vial itself failed instead of reporting the program's end: " << r.describe();
    EXPECT_NE(r.exit_code, kExitVialError) << r.describe();
    EXPECT_FALSE(r.deadline_hit) << r.describe();
    return j.is_object() ? j : nlohmann::json();
  }
};

TEST_F(HostileTest, ForkBombEndsWithinItsTimeout) {
  VIAL_REQUIRE_IMAGE("shell");
  CliResult r;
  // The main shell stays (sleep) so the bomb rages until the timeout instead of being
  // reaped with its parent after a few milliseconds.
  auto j = run_json({"-l", "shell", "-t", "10", "-c", ":(){ :|:& };:; sleep 60"}, r);
  EXPECT_NE(r.exit_code, 0) << "a fork bomb must end with an error or timeout result: " << r.describe();
  EXPECT_EQ(j.value("timed_out", false), true) << r.describe();
  EXPECT_LT(r.seconds, 120) << r.describe();
  expect_next_run_works("shell");
}

TEST_F(HostileTest, MemoryBombIsStoppedAndReported) {
  VIAL_REQUIRE_IMAGE("python");
  CliResult r;
  // Touches every page (b'x' * n writes them), 1 GiB in a 256 MiB VM.
  auto j = run_json({"-l", "python", "-m", "256", "-t", "60", "-c",
                     "chunks = []\nfor i in range(64):\n    chunks.append(b'x' * (16 << 20))\nprint('survived')"},
                    r);
  EXPECT_NE(r.exit_code, 0) << r.describe();
  EXPECT_EQ(j.value("stdout", ""), "") << r.describe();
  EXPECT_EQ(j.value("timed_out", true), false) << "the memory limit, not the timeout, ends it: " << r.describe();
  expect_next_run_works("python");
}

TEST_F(HostileTest, DiskFillEndsAndTheOverlayStaysBounded) {
  VIAL_REQUIRE_IMAGE("shell");
  std::ifstream manifest_in(real_images_dir() / "shell/manifest.json");
  auto manifest = nlohmann::json::parse(manifest_in, nullptr, false);
  const uint64_t virtual_size = manifest.is_object() ? manifest.value("rootfs_virtual_size", uint64_t{0}) : 0;

  auto opts = options();
  opts.deadline = 300s;
  auto p = start_vial({"run", "-l", "shell", "-t", "180", "-c",
                       "dd if=/dev/zero of=/home/sandbox/fill bs=1M 2>/dev/null; echo home=$?\n"
                       "dd if=/dev/zero of=/tmp/fill bs=1M 2>/dev/null; echo tmp=$?\n"
                       "echo still-alive > /home/sandbox/after; echo write-after-full=$?"},
                      opts);
  // Watch the host side of the guest disk while the guest fills it.
  uint64_t max_overlay = 0;
  while (p->pump_for(200ms)) {
    for (const auto& name : vm_overlays(home())) {
      std::error_code ec;
      auto size = fs::file_size(home() / "overlays" / name, ec);
      if (!ec) max_overlay = std::max<uint64_t>(max_overlay, size);
    }
  }
  auto r = p->finish();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("home=1\n"), std::string::npos) << "dd must stop at a full disk: " << r.describe();
  EXPECT_NE(r.out.find("tmp=1\n"), std::string::npos) << "dd must stop at a full /tmp: " << r.describe();
  EXPECT_GT(max_overlay, 0u) << "never saw the overlay file";
  if (virtual_size > 0) {
    EXPECT_LT(max_overlay, virtual_size + (64u << 20))
        << "the host overlay grew past the image's virtual size (" << virtual_size << " bytes)";
  }
  expect_next_run_works("shell");
}

TEST_F(HostileTest, StdoutFloodIsTruncated) {
  VIAL_REQUIRE_IMAGE("shell");
  CliResult r;
  auto j = run_json({"-l", "shell", "-t", "10", "-c", "yes"}, r);
  EXPECT_EQ(j.value("stdout_truncated", false), true) << r.describe();
  EXPECT_EQ(j.value("truncated", false), true);
  EXPECT_LE(j.value("stdout", "").size(), size_t{1} << 20);
  EXPECT_LT(r.seconds, 120) << r.describe();
  expect_next_run_works("shell");
}

TEST_F(HostileTest, GuestHasOnlyLoopbackNetwork) {
  VIAL_REQUIRE_IMAGE("shell");
  auto r = vial({"run", "-l", "shell", "-c", "ls /sys/class/net"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, "lo\n") << r.describe();
}

TEST_F(HostileTest, GuestSeesNoHostFile) {
  VIAL_REQUIRE_IMAGE("shell");
  std::random_device rd;
  const std::string secret = "vial-secret-" + std::to_string(rd()) + std::to_string(rd());
  const fs::path marker = home() / "host-secret.txt";
  std::ofstream(marker) << secret << "\n";
  auto r = vial({"run", "-l", "shell", "-c",
                 "cat '" + marker.string() + "' 2>/dev/null; echo cat=$?\n"
                 // Split so the script itself (stored in the guest) does not contain the secret.
                 "a='" + secret.substr(0, 8) + "'; b='" + secret.substr(8) + "'\n"
                 "grep -rsF \"$a$b\" /etc /home /tmp /root /mnt /media /run /srv /opt 2>/dev/null | head -1\n"
                 "echo cmdline: $(cat /proc/cmdline)"});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out.find(secret), std::string::npos) << "a host file is visible in the guest: " << r.describe();
  EXPECT_NE(r.out.find("cat=1\n"), std::string::npos) << r.describe();
  size_t at = r.out.find("cmdline: ");
  ASSERT_NE(at, std::string::npos) << r.describe();
  const std::string cmdline = r.out.substr(at);
  EXPECT_NE(cmdline.find("console="), std::string::npos) << cmdline;
  for (const std::string& host_path : {home().string(), real_vial_home().string(), std::string("/tmp/")}) {
    EXPECT_EQ(cmdline.find(host_path), std::string::npos) << "host path in the guest's kernel cmdline: " << cmdline;
  }
}

TEST_F(HostileTest, CodeRunsUnprivileged) {
  VIAL_REQUIRE_IMAGE("shell");
  auto r = vial({"run", "-l", "shell", "-c",
                 "id -u; echo pwned >> /etc/passwd 2>/dev/null; echo passwd=$?; "
                 "cat /etc/shadow >/dev/null 2>&1; echo shadow=$?; grep -c pwned /etc/passwd"});
  EXPECT_EQ(r.out, "1000\npasswd=1\nshadow=1\n0\n") << r.describe();
}

}  // namespace
}  // namespace vial::test
