#include "pack/rootfs_image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "pack/interrupt.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kInodeBytes = 256;
// Superblocks, group descriptors, bitmaps and the journal of a small ext4 (mke2fs picks a
// 4-64 MiB journal for these sizes).
constexpr uint64_t kExt4OverheadBytes = 32 * kMiB;
constexpr uint64_t kSandboxId = 1000;  // the agent runs programs as uid/gid 1000

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// Creates root/name as a directory with `mode` unless something (even a symlink) is there.
void add_dir(const fs::path& root, const std::string& name, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  const fs::path p = root / name;
  struct stat st{};
  if (::lstat(p.c_str(), &st) == 0) return;
  if (::mkdir(p.c_str(), mode) != 0) throw_errno("cannot create " + p.string(), errno);
  ::chmod(p.c_str(), mode);  // past the umask (1777 for /tmp)
  if (::geteuid() == 0 && ::lchown(p.c_str(), uid, gid) != 0) throw_errno("cannot chown " + p.string(), errno);
}

}  // namespace

void prepare_rootfs(const fs::path& root) {
  for (const char* mount_point : {"proc", "sys", "dev", "run"}) add_dir(root, mount_point, 0755);
  add_dir(root, "tmp", 01777);
  struct stat home{};
  if (::lstat((root / "home").c_str(), &home) != 0) add_dir(root, "home", 0755);
  if (::lstat((root / "home").c_str(), &home) == 0 && S_ISDIR(home.st_mode)) {
    add_dir(root / "home", "sandbox", 0755, kSandboxId, kSandboxId);
  }
}

Ext4Size ext4_size_for(const fs::path& root, uint64_t headroom_bytes) {
  uint64_t data = 0, entries = 1;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Error(ErrorKind::internal, "cannot read " + root.string() + ": " + ec.message());
    throw_if_interrupted();
    struct stat st{};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    ++entries;
    if (S_ISREG(st.st_mode)) data += round_up(static_cast<uint64_t>(st.st_size), kBlock);
    else if (S_ISDIR(st.st_mode) || (S_ISLNK(st.st_mode) && st.st_size >= 60)) data += kBlock;
  }
  if (ec) throw Error(ErrorKind::internal, "cannot read " + root.string() + ": " + ec.message());
  Ext4Size size;
  // Inodes for what is there, a fifth more, and some for what the guest creates.
  size.inodes = entries + entries / 5 + 16384;
  size.bytes = round_up(data + data / 10 + size.inodes * kInodeBytes + kExt4OverheadBytes + headroom_bytes, kMiB);
  return size;
}

uint64_t rootfs_headroom_bytes() {
  if (const char* v = std::getenv("VIAL_ROOTFS_HEADROOM_MIB"); v && *v) {
    char* end = nullptr;
    unsigned long long mib = std::strtoull(v, &end, 10);
    if (*end != '\0' || mib > (1ull << 20)) {
      throw Error(ErrorKind::invalid_input, "VIAL_ROOTFS_HEADROOM_MIB must be a number of MiB, not '" + std::string(v) + "'");
    }
    return mib * kMiB;
  }
  return 256 * kMiB;
}

uint64_t build_rootfs_qcow2(const fs::path& root, const fs::path& scratch, const fs::path& qcow2,
                            const std::function<void(const std::string&)>& progress) {
  const Ext4Size size = ext4_size_for(root, rootfs_headroom_bytes());
  const fs::path raw = scratch / "rootfs.ext4";
  if (progress) progress("building the ext4 root filesystem (" + std::to_string(size.bytes / kMiB) + " MiB disk)");
  {
    std::error_code ec;
    if (FILE* f = std::fopen(raw.c_str(), "w")) std::fclose(f);
    fs::resize_file(raw, size.bytes, ec);  // sparse: only what mkfs writes takes space
    if (ec) throw Error(ErrorKind::internal, "cannot create " + raw.string() + ": " + ec.message());
  }
  // A journal, unlike the throwaway images' rootfs: a machine's disk lives on across kills.
  run_tool({"mkfs.ext4", "-q", "-F", "-d", root.string(), "-L", "vial-root", "-m", "0", "-b", "4096", "-N",
            std::to_string(size.inodes), "-E", "root_owner=0:0", raw.string()},
           "making the ext4 root filesystem (mkfs.ext4 -d)", scratch / "mkfs.log");
  if (progress) progress("converting the disk to qcow2");
  run_tool({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.string(), qcow2.string()},
           "converting the root filesystem to qcow2 (qemu-img convert)", scratch / "qemu-img.log");
  std::error_code ec;
  fs::remove(raw, ec);
  return size.bytes;
}

}  // namespace vial::pack
