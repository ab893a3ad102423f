#include "cli/common.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <optional>


#include "images/image_store.h"
#include "sandbox/runner.h"
#include "util/error.h"
#include "util/event_loop.h"
#include "util/paths.h"
#include "util/process.h"
#include "vm/qemu_command.h"

namespace vial::cli {
namespace {

// What the KVM verdict depends on: host kernel, QEMU binary, guest kernel.
std::string accel_fingerprint(const ImageInfo* image) {
  struct utsname u {};
  ::uname(&u);
  std::string fp = std::string(u.release) + "|" + qemu_identity();
  if (image) fp += "|" + image->manifest.value(nlohmann::json::json_pointer("/kernel/release"), std::string("?"));
  return fp;
}

KvmProbe probe_kvm(const std::string& language) {
  RunRequest request;
  request.language = language;
  request.code = print_one_code(language);
  RunOptions options;
  options.accel = {AccelKind::kvm, "probe"};
  options.boot_timeout = std::chrono::seconds(15);
  options.use_template = false;  // a plain boot is the test; no template for an unproven accelerator
  std::fprintf(stderr, "vial: checking once whether KVM can boot a guest here (cached afterwards)...\n");
  try {
    bool ok = false;
    run_with_signals([&]() -> boost::asio::awaitable<void> {
      RunResult r = co_await run_once(request, options, {});
      ok = r.exit_code == 0 && r.stdout_data == "1\n";
    });
    return {ok, ok ? "" : "the test program gave a wrong answer"};
  } catch (const Interrupted&) {
    throw;
  } catch (const Error& e) {
    // Only a guest that fails to boot says something about KVM; anything else (QEMU missing,
    // no space...) is vial's problem and must not be cached as a verdict.
    if (e.kind() != ErrorKind::boot_failed && e.kind() != ErrorKind::timeout) throw;
    std::string first_line = e.what();
    return {false, first_line.substr(0, first_line.find('\n'))};
  } catch (const std::exception& e) {
    std::string first_line = e.what();
    return {false, first_line.substr(0, first_line.find('\n'))};
  }
}

}  // namespace

int report_error(const std::exception& error, bool json, int failure_code) {
  int code = failure_code;
  std::string kind = "internal";
  if (auto* e = dynamic_cast<const Error*>(&error)) {
    kind = std::string(to_string(e->kind()));
    if (e->kind() == ErrorKind::invalid_input || e->kind() == ErrorKind::too_large) code = kExitUsage;
  }
  if (dynamic_cast<const Interrupted*>(&error)) {
    code = kExitInterrupted;
    kind = "cancelled";
  }
  if (json) {
    std::cout << dump_json({{"error", {{"kind", kind}, {"message", error.what()}}}}) << std::endl;
  } else {
    std::fprintf(stderr, "vial: %s\n", error.what());
  }
  return code;
}

Accel choose_accel(const std::string& language, bool quiet, bool recheck) {
  std::optional<ImageInfo> image;
  if (is_image_language(language)) image = find_image(language);
  AccelDetectOptions options;
  options.cache_file = vial_home() / "accel.json";
  options.fingerprint = accel_fingerprint(image ? &*image : nullptr);
  options.recheck = recheck;
  if (image) {
    options.boot_probe = [language] { return probe_kvm(language); };
    ensure_private_dir(vial_home());
  }
  Accel accel = detect_accel(options);
  if (!quiet && accel.kind == AccelKind::tcg) std::fprintf(stderr, "vial: %s\n", accel.reason.c_str());
  return accel;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<size_t>(n));
  }
}

RunResult stream_run(server::DaemonClient& client, const std::string& target, const nlohmann::json& body) {
  std::optional<RunResult> result;
  client.stream(target, body, [&](const nlohmann::json& event) {
    const std::string type = event.value("type", "");
    if (type == "stdout") write_all(STDOUT_FILENO, get_bytes(event, "data").value_or(""));
    if (type == "stderr") write_all(STDERR_FILENO, get_bytes(event, "data").value_or(""));
    if (type == "result") result = run_result_from_json(event);
    if (type == "error") {
      server::throw_api_error(event.value("/error/code"_json_pointer, ""), event.value("/error/message"_json_pointer, ""));
    }
  });
  if (!result) throw Error(ErrorKind::internal, "the vial server ended the stream without a result");
  return *result;
}

}  // namespace vial::cli
