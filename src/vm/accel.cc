#include "vm/accel.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/paths.h"

namespace vial {
namespace {

constexpr const char* kFallback = "; using TCG (software emulation, 5-10x slower)";

std::optional<KvmProbe> read_cached_probe(const AccelDetectOptions& o) {
  if (o.cache_file.empty() || o.recheck) return std::nullopt;
  std::ifstream in(o.cache_file);
  if (!in) return std::nullopt;
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || j.value("fingerprint", "") != o.fingerprint) return std::nullopt;
  return KvmProbe{j.value("booted", false), j.value("detail", "")};
}

void write_cached_probe(const AccelDetectOptions& o, const KvmProbe& p) {
  if (o.cache_file.empty()) return;
  nlohmann::json j = {{"fingerprint", o.fingerprint}, {"booted", p.booted}, {"detail", p.detail}};
  replace_file(o.cache_file, j.dump() + "\n");
}

}  // namespace

KvmDeviceCheck check_kvm_device(const std::filesystem::path& device) {
  int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return {false, device.string() + " does not exist (no KVM on this host)"};
    if (err == EACCES || err == EPERM) {
      return {false, "permission denied on " + device.string() +
                         " (add your user to the kvm group: sudo usermod -aG kvm $USER, then log in again)"};
    }
    return {false, "cannot open " + device.string() + ": " + std::strerror(err)};
  }
  KvmDeviceCheck result{true, ""};
  int api = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) {
    result = {false, "unexpected KVM API version " + std::to_string(api)};
  } else {
    int vm = ::ioctl(fd, KVM_CREATE_VM, 0);
    if (vm < 0) {
      result = {false, std::string("KVM_CREATE_VM failed: ") + std::strerror(errno)};
    } else {
      ::close(vm);
    }
  }
  ::close(fd);
  return result;
}

Accel decide_accel(const std::optional<std::string>& forced, const KvmDeviceCheck& device,
                   const std::optional<KvmProbe>& probe) {
  if (forced == "tcg") return {AccelKind::tcg, "TCG forced by VIAL_ACCEL=tcg"};
  if (forced == "kvm") {
    if (device.ok) return {AccelKind::kvm, "KVM forced by VIAL_ACCEL=kvm"};
    return {AccelKind::tcg, "VIAL_ACCEL=kvm but KVM is unusable: " + device.problem + kFallback};
  }
  if (!device.ok) return {AccelKind::tcg, "KVM unusable: " + device.problem + kFallback};
  if (probe && !probe->booted) {
    return {AccelKind::tcg, "KVM is present but a test guest did not boot under it (" + probe->detail +
                                ", e.g. nested or paravirtualized KVM)" + kFallback};
  }
  return {AccelKind::kvm, probe ? "KVM usable (a test guest booted under it)"
                                : "KVM device usable (not yet confirmed by booting a guest: no image built)"};
}

Accel detect_accel(const AccelDetectOptions& options) {
  std::optional<std::string> forced;
  if (const char* v = std::getenv("VIAL_ACCEL"); v && *v) forced = v;
  if (forced && forced != "kvm" && forced != "tcg") {
    throw Error(ErrorKind::invalid_input, "VIAL_ACCEL must be kvm or tcg, not '" + *forced + "'");
  }
  KvmDeviceCheck device = check_kvm_device(options.device);
  std::optional<KvmProbe> probe;
  if (!forced && device.ok) {
    probe = read_cached_probe(options);
    if (!probe && options.boot_probe) {
      probe = options.boot_probe();
      write_cached_probe(options, *probe);
    }
  }
  return decide_accel(forced, device, probe);
}

}  // namespace vial
