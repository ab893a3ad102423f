// `vial doctor`: checks what vial needs on this host and says what to do about each gap.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "images/image_store.h"
#include "util/error.h"
#include "util/paths.h"
#include "util/process.h"

namespace vial::cli {
namespace {

enum class Level { ok, warn, fail };

struct Check {
  std::string name;
  Level level;
  std::string detail;
};

const char* level_name(Level l) { return l == Level::ok ? "ok" : l == Level::warn ? "warn" : "FAIL"; }

Check program_check(const std::string& program, const std::string& why, Level missing_level) {
  auto path = find_program(program);
  if (!path) return {program, missing_level, "not found (" + why + "): run scripts/install-deps"};
  auto r = run_capture({path->string(), "--version"}, std::chrono::seconds(10));
  std::string first = r.output.substr(0, r.output.find('\n'));
  return {program, Level::ok, path->string() + (first.empty() ? "" : " — " + first)};
}

std::vector<Check> run_checks(bool recheck) {
  std::vector<Check> checks;
  checks.push_back(program_check("qemu-system-x86_64", "runs the microVMs", Level::fail));
  checks.push_back(program_check("qemu-img", "creates the disk overlays", Level::fail));
  checks.push_back(program_check("mmdebstrap", "builds guest images", Level::warn));

  try {
    checks.push_back({"guest agent", Level::ok, agent_binary().string()});
  } catch (const Error& e) {
    checks.push_back({"guest agent", Level::warn, e.what()});
  }

  std::filesystem::path home = vial_home();
  try {
    ensure_private_dir(home);
    bool writable = ::access(home.c_str(), W_OK) == 0;
    checks.push_back({"VIAL_HOME", writable ? Level::ok : Level::fail,
                      home.string() + (writable ? "" : " is not writable: set VIAL_HOME")});
  } catch (const Error& e) {
    checks.push_back({"VIAL_HOME", Level::fail, e.what()});
  }

  std::string probe_language;
  for (const auto& lang : image_languages()) {
    if (auto image = find_image(lang)) {
      if (probe_language.empty()) probe_language = lang;
      checks.push_back({"image " + lang, Level::ok,
                        image->dir.string() + " (" + std::to_string(image->disk_bytes >> 20) + " MiB, kernel " +
                            image->manifest.value(nlohmann::json::json_pointer("/kernel/release"), std::string("?")) +
                            ")"});
    } else {
      checks.push_back({"image " + lang, Level::warn, "not built: run `vial image build " + lang + "`"});
    }
  }

  if (probe_language.empty()) {
    checks.push_back({"images", Level::fail, "no guest image is built: run `vial image build` (or `make demo`)"});
  }
  KvmDeviceCheck device = check_kvm_device();
  checks.push_back({"/dev/kvm", device.ok ? Level::ok : Level::warn, device.ok ? "usable" : device.problem});
  try {
    Accel accel = choose_accel(probe_language.empty() ? "python" : probe_language, true, recheck);
    checks.push_back({"accelerator", accel.kind == AccelKind::kvm ? Level::ok : Level::warn,
                      std::string(accel.name()) + ": " + accel.reason});
  } catch (const std::exception& e) {
    checks.push_back({"accelerator", Level::fail, e.what()});
  }
  return checks;
}

int doctor(bool json, bool recheck) {
  auto checks = run_checks(recheck);
  bool failed = false;
  for (const auto& c : checks) failed = failed || c.level == Level::fail;
  if (json) {
    nlohmann::json out = {{"ok", !failed}, {"checks", nlohmann::json::array()}};
    for (const auto& c : checks) {
      out["checks"].push_back({{"name", c.name}, {"status", level_name(c.level)}, {"detail", c.detail}});
    }
    std::cout << dump_json(out, 2) << std::endl;
  } else {
    for (const auto& c : checks) std::printf("%-5s %-20s %s\n", level_name(c.level), c.name.c_str(), c.detail.c_str());
    std::printf("%s\n", failed ? "vial cannot run sandboxes yet: fix the FAIL lines above."
                               : "vial is ready (warn lines are optional or have a fallback).");
  }
  return failed ? kExitFailure : kExitOk;
}

}  // namespace

void add_doctor_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto recheck = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("doctor", "Check QEMU, KVM, images and permissions; say what to fix");
  cmd->add_flag("--json", *json, "Print the checks as JSON");
  cmd->add_flag("--recheck", *recheck, "Probe KVM again instead of using the cached verdict");
  cmd->callback([json, recheck] { throw CLI::RuntimeError(doctor(*json, *recheck)); });
}

}  // namespace vial::cli
