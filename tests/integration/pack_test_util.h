// Inputs and checks shared by the pack integration tests: a busybox root filesystem, reading
// files back out of a pack's ext4-in-qcow2 disk.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "util/process.h"

namespace vial::test {

// The smallest bootable foreign root filesystem: a static busybox as /bin/sh, nothing of vial.
inline void make_busybox_rootfs(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir / "bin");
  fs::create_directories(dir / "etc");
  fs::copy_file("/usr/bin/busybox", dir / "bin/busybox", fs::copy_options::overwrite_existing);
  fs::permissions(dir / "bin/busybox", fs::perms(0755));
  for (const char* applet : {"sh", "echo", "cat", "ls", "id"}) {
    if (!fs::exists(fs::symlink_status(dir / "bin" / applet))) fs::create_symlink("busybox", dir / "bin" / applet);
  }
  std::ofstream(dir / "hello.txt") << "hello\n";
  std::ofstream(dir / "etc/os-release") << "ID=busybox-test\n";
}

// The ext4 disk inside a pack's rootfs.qcow2, read with debugfs (no mount, no root needed).
class Ext4Disk final {
 public:
  explicit Ext4Disk(const std::filesystem::path& qcow2) : raw_(qcow2.string() + ".raw") {
    run_capture({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2.string(), raw_}, std::chrono::seconds(60));
  }
  ~Ext4Disk() { std::filesystem::remove(raw_); }
  Ext4Disk(const Ext4Disk&) = delete;
  Ext4Disk& operator=(const Ext4Disk&) = delete;

  // The file's content ("" when missing).
  std::string cat(const std::string& path) const { return debugfs("cat " + path); }
  // debugfs's stat (mode, owner...) or "" when missing.
  std::string stat(const std::string& path) const { return debugfs("stat " + path); }
  bool exists(const std::string& path) const { return !stat(path).empty(); }

 private:
  std::string debugfs(const std::string& request) const {
    return run_capture({"sh", "-c", "debugfs -R \"$1\" \"$0\" 2>/dev/null", raw_, request}, std::chrono::seconds(60))
        .output;
  }
  std::string raw_;
};

}  // namespace vial::test
