#include "guest/init.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "guest/util.h"

namespace vial::guest {

namespace {

int64_t g_boot_start = 0;
bool g_root_disk_driver = false;  // virtio_blk is loaded
constexpr const char* kRootDiskModule = "/modules/virtio_blk.ko";

[[noreturn]] void fail(const std::string& what) {
  std::string line = what;
  if (errno) line += std::string(": ") + strerror(errno);
  line += " (after " + std::to_string(now_ms() - g_boot_start) + " ms)";
  fatal_boot(line.c_str());
}

void must_mount(const char* src, const char* target, const char* type, unsigned long flags,
                const char* data) {
  mkdir(target, 0755);
  if (mount(src, target, type, flags, data) != 0 && errno != EBUSY)
    fail(std::string("mount ") + type + " on " + target);
}

void load_module(const char* path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;  // built into this kernel, or not shipped
    fail(std::string("open ") + path);
  }
  if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
    int e = errno;
    close(fd);
    errno = e;
    fail(std::string("finit_module ") + path);
  }
  close(fd);
}

// Waits up to `timeout_ms` for `ready()`, polling every millisecond.
template <typename F>
bool wait_for(F ready, int timeout_ms) {
  int64_t end = now_ms() + timeout_ms;
  for (;;) {
    if (ready()) return true;
    if (now_ms() >= end) return false;
    usleep(1000);
  }
}

// Frees the initramfs (it lives in RAM) once everything we need is mounted elsewhere.
void delete_initramfs(dev_t root_dev) {
  DIR* d = opendir("/");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == ".." || name == "newroot") continue;
    std::string p = "/" + name;
    struct stat st{};
    if (lstat(p.c_str(), &st) == 0 && st.st_dev == root_dev) remove_tree(p);
  }
  closedir(d);
}

void switch_root() {
  struct stat root{};
  stat("/", &root);
  for (const char* m : {"/dev", "/proc", "/sys"}) {
    std::string target = std::string("/newroot") + m;
    mkdir(target.c_str(), 0755);
    if (mount(m, target.c_str(), nullptr, MS_MOVE, nullptr) != 0) fail(std::string("move ") + m);
  }
  delete_initramfs(root.st_dev);
  if (chdir("/newroot") != 0) fail("chdir /newroot");
  if (mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) fail("move newroot to /");
  if (chroot(".") != 0) fail("chroot");
  if (chdir("/") != 0) fail("chdir /");
}

void loopback_up() {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  ifreq ifr{};
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  close(s);
}

int find_agent_port() {
  DIR* d = opendir("/sys/class/virtio-ports");
  if (!d) return -1;
  int fd = -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string name;
    if (!read_file(std::string("/sys/class/virtio-ports/") + e->d_name + "/name", name)) continue;
    while (!name.empty() && (name.back() == '\n' || name.back() == '\0')) name.pop_back();
    if (name != "agent") continue;
    // Opened once for the VM's lifetime: a second open would get EBUSY.
    fd = open((std::string("/dev/") + e->d_name).c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK);
    break;
  }
  closedir(d);
  return fd;
}

}  // namespace

void boot_mark(const char* phase) {
  // A fresh open each time: the kernel rate-limits writes per open file (10 per 5 s).
  int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::string line = std::string("<6>vial-init: ") + phase;
  [[maybe_unused]] ssize_t n = write(fd, line.data(), line.size());
  close(fd);
}

void fatal_boot(const char* reason) {
  console_log(reason);
  sync();
  reboot(RB_AUTOBOOT);
  for (;;) pause();  // reboot failed; PID 1 must still not exit
}

void mount_kernel_file_systems() {
  g_boot_start = now_ms();
  must_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  must_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  must_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
}

void load_virtio_drivers(bool root_disk) {
  for (const char* m : {"/modules/virtio_ring.ko", "/modules/virtio.ko", "/modules/virtio_mmio.ko",
                        "/modules/virtio_console.ko"})
    load_module(m);
  if (root_disk) {
    load_module(kRootDiskModule);
    g_root_disk_driver = true;
  }
  boot_mark("modules loaded");
}

void mount_root_file_systems() {
  if (!g_root_disk_driver) load_module(kRootDiskModule);
  errno = 0;
  if (!wait_for([] { return access("/dev/vda", F_OK) == 0; }, 10000)) fail("no /dev/vda");
  boot_mark("root disk present");
  mkdir("/newroot", 0755);
  if (mount("/dev/vda", "/newroot", "ext4", MS_NOATIME, "") != 0) fail("mount /dev/vda");
  boot_mark("root disk mounted");
  switch_root();
  boot_mark("switched root");

  must_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m");
  must_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  must_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
  must_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  must_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  mkdir("/run/vial", 0755);

  sethostname("vial", 4);
  loopback_up();
  write_file("/proc/self/oom_score_adj", "-1000");
  boot_mark("file systems mounted");
}

int open_agent_port() {
  int fd = -1;
  errno = 0;
  if (!wait_for([&] { return (fd = find_agent_port()) >= 0; }, 10000))
    fail("no virtio-serial port named agent");
  boot_mark("agent port open");
  return fd;
}

}  // namespace vial::guest
