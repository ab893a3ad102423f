// Which accelerator QEMU uses: KVM when it really runs guests, TCG otherwise.
//
// An openable /dev/kvm is not enough: under nested, paravirtualized KVM the device accepts
// KVM_CREATE_VM and even runs toy code, yet a Linux guest hangs in early boot. So the verdict
// comes from booting a real guest once under KVM with a deadline; it is cached per host
// kernel, QEMU version and guest kernel, and `vial doctor --recheck` forgets it.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

namespace vial {

enum class AccelKind { kvm, tcg };

struct Accel {
  AccelKind kind = AccelKind::tcg;
  // One line saying why this accelerator was chosen (shown by `vial doctor` and on fallback).
  std::string reason;

  const char* name() const { return kind == AccelKind::kvm ? "kvm" : "tcg"; }
};

// The cheap checks: the device exists, is readable and writable, speaks API 12, creates a VM.
struct KvmDeviceCheck {
  bool ok = false;
  std::string problem;  // set when !ok: what is wrong and what to do
};
KvmDeviceCheck check_kvm_device(const std::filesystem::path& device = "/dev/kvm");

// The outcome of booting a real guest under KVM.
struct KvmProbe {
  bool booted = false;
  std::string detail;  // why it failed
};

// Pure decision, unit-tested: a forced choice (VIAL_ACCEL=kvm|tcg) wins; then the device
// check; then the boot probe (absent means "not probed": trust the device check).
Accel decide_accel(const std::optional<std::string>& forced, const KvmDeviceCheck& device,
                   const std::optional<KvmProbe>& probe);

struct AccelDetectOptions {
  std::filesystem::path device = "/dev/kvm";
  // Where the probe verdict is cached; empty disables the cache.
  std::filesystem::path cache_file;
  // Identifies what the verdict depends on (host kernel, QEMU version, guest kernel).
  std::string fingerprint;
  // Boots a guest under KVM with a deadline; empty means no probe is possible (no image yet).
  std::function<KvmProbe()> boot_probe;
  // Ignore a cached verdict.
  bool recheck = false;
};

// Reads VIAL_ACCEL, checks the device and runs (or reuses) the probe.
Accel detect_accel(const AccelDetectOptions& options);

}  // namespace vial
