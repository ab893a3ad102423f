// Turning a root filesystem tree into the qcow2 disk a pack carries.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace vial::pack {

// What the vial agent (PID 1 from the initramfs) needs in a root filesystem it did not come
// with: mount points /proc /sys /dev /run /tmp (1777) and the sandbox user's home
// /home/sandbox (uid/gid 1000), each added only when nothing of that name exists.
void prepare_rootfs(const std::filesystem::path& root);

struct Ext4Size {
  uint64_t bytes = 0;
  uint64_t inodes = 0;
};

// Room for the tree's content plus ext4 metadata, the journal and `headroom_bytes` the guest
// may write, rounded up to MiB.
Ext4Size ext4_size_for(const std::filesystem::path& root, uint64_t headroom_bytes);

// The headroom: $VIAL_ROOTFS_HEADROOM_MIB (as images/build-image) or 256 MiB.
uint64_t rootfs_headroom_bytes();

// mkfs.ext4 -d root into a raw image in `scratch`, then qemu-img convert to `qcow2`.
// Returns the disk's virtual size in bytes.
uint64_t build_rootfs_qcow2(const std::filesystem::path& root, const std::filesystem::path& scratch,
                            const std::filesystem::path& qcow2, const std::function<void(const std::string&)>& progress);

}  // namespace vial::pack
