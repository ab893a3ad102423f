#include "vm/qemu_command.h"

#include <sys/stat.h>

#include "util/error.h"
#include "util/process.h"

namespace vial {
namespace {

// QEMU option values separate keys with commas; a literal comma in a path is written twice.
std::string opt_path(const std::filesystem::path& p) {
  std::string out;
  for (char ch : p.string()) {
    out += ch;
    if (ch == ',') out += ',';
  }
  return out;
}

}  // namespace

std::string qemu_identity(const std::string& binary) {
  auto path = find_program(binary);
  struct stat st {};
  if (!path || ::stat(path->c_str(), &st) != 0) return {};
  return path->string() + " " + std::to_string(st.st_size) + " " + std::to_string(st.st_mtime);
}

std::string guest_cpu(const VmConfig& c) {
  // la57=off: with 5-level paging every emulated page walk is one level deeper; a guest of a
  // few hundred MiB never needs a 57-bit address space.
  return c.accel.kind == AccelKind::kvm ? "host" : "max,la57=off";
}

std::string kernel_cmdline(const VmConfig& c) {
  // quiet/loglevel: every console byte is a slow emulated UART write under TCG.
  // panic=-1 with -no-reboot: a guest panic ends QEMU, which the host sees at once.
  // pci=off: microvm has no PCI. The rest skip work a throwaway VM never needs.
  std::string line =
      "console=ttyS0 quiet loglevel=2 panic=-1 pci=off nomodeset mitigations=off "
      "random.trust_cpu=on cryptomgr.notests tsc=reliable no_timer_check "
      "rcupdate.rcu_expedited=1 8250.nr_uarts=1 i8042.noaux i8042.nokbd audit=0 init_on_alloc=0";
  // init_on_alloc=0: Debian zeroes every kernel allocation (hardening against kernel memory
  // leaks to the guest's own processes); the boundary vial enforces is the VM. Pages handed to
  // processes are zeroed either way. With la57=off: ~100 ms off a TCG machine start.
  // tsc=reliable also stops the clocksource watchdog from demoting the TSC mid-run.
  if (c.tsc_khz > 0) line += " tsc_early_khz=" + std::to_string(c.tsc_khz);
  if (!c.warm_interpreters) line += " vial.warm=0";
  if (c.park) line += " vial.park=1";
  return line;
}

std::vector<std::string> build_qemu_argv(const VmConfig& c) {
  auto require = [](const std::filesystem::path& p, const char* what) {
    if (p.empty()) throw Error(ErrorKind::invalid_input, std::string("VM config: no ") + what);
  };
  if (!c.incoming) {
    require(c.kernel, "kernel");
    require(c.initramfs, "initramfs");
  }
  require(c.root_disk, "root disk");
  require(c.agent_socket, "agent socket");
  require(c.console_log, "console log");
  if (c.memory_mib < kMinMemoryMib) {
    throw Error(ErrorKind::invalid_input, "memory must be at least " + std::to_string(kMinMemoryMib) + " MiB");
  }
  if (c.vcpus < 1) throw Error(ErrorKind::invalid_input, "vcpus must be at least 1");

  const bool kvm = c.accel.kind == AccelKind::kvm;
  std::vector<std::string> argv = {
      c.qemu_binary,
      "-name", c.name.empty() ? "vial" : c.name,
      "-M", c.memory_file.empty() ? "microvm" : "microvm,memory-backend=mem",
      "-accel", kvm ? "kvm" : "tcg,thread=multi,tb-size=" + std::to_string(kTcgTranslationCacheMib),
      "-cpu", guest_cpu(c),
      "-m", std::to_string(c.memory_mib),
      "-smp", std::to_string(c.vcpus),
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      // QEMU's own seccomp filter: no exec, no privilege changes, no obsolete syscalls.
      "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      "-drive", "id=root,file=" + opt_path(c.root_disk) + ",format=qcow2,if=none,cache=unsafe,discard=unmap",
      "-device", "virtio-blk-device,drive=root",
      "-chardev", "socket,id=agent,path=" + opt_path(c.agent_socket) + ",server=on,wait=off",
      "-device", "virtio-serial-device",
      "-device", "virtserialport,chardev=agent,name=agent",
      "-chardev", "file,id=console,path=" + opt_path(c.console_log),
      "-serial", "chardev:console",
      // No network device at all: the guest only has lo.
      "-nic", "none",
  };
  // A restored guest's kernel is already in its RAM: loading the image again (53 MiB for
  // Debian's vmlinux) would cost every restore ~15 ms of QEMU start-up for nothing.
  if (!c.incoming) {
    argv.insert(argv.end(), {"-kernel", c.kernel.string(), "-initrd", c.initramfs.string(), "-append",
                             kernel_cmdline(c)});
  }
  if (!c.memory_file.empty()) {
    argv.insert(argv.end(), {"-object", "memory-backend-file,id=mem,size=" + std::to_string(c.memory_mib) +
                                            "M,mem-path=" + opt_path(c.memory_file) +
                                            (c.memory_shared ? ",share=on" : ",share=off")});
  }
  if (c.qmp_fd >= 0) {
    argv.insert(argv.end(),
                {"-chardev", "socket,id=qmp,fd=" + std::to_string(c.qmp_fd), "-mon", "chardev=qmp,mode=control"});
  }
  if (c.incoming) argv.insert(argv.end(), {"-incoming", "defer"});
  return argv;
}

}  // namespace vial
