#include "storage/pristine_overlays.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "storage/storage_daemon.h"
#include "util/fnv.h"
#include "util/paths.h"
#include "util/unique_fd.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

// "<hash of path>-<hash of identity>": siblings with the same prefix are older versions.
std::string path_prefix(const BaseImage& base) { return Fnv64().add(base.path.string()).hex() + "-"; }

std::string pristine_name(const BaseImage& base) {
  Fnv64 id;
  id.add_value(base.dev).add_value(base.ino).add_value(base.file_size).add_value(base.mtime_ns);
  id.add_value(base.virtual_size);
  return path_prefix(base) + id.hex() + ".qcow2";
}

[[noreturn]] void throw_copy_error(const fs::path& src, const fs::path& dst, int err) {
  throw StorageDaemonError("cannot copy " + src.string() + " to " + dst.string() + ": " + std::strerror(err), {},
                           err == EEXIST ? ErrorKind::invalid_input : ErrorKind::internal);
}

// Returns 0 or an errno. Tries the in-kernel copy, then plain reads and writes.
int copy_contents(int in, int out) {
  if (::ioctl(out, FICLONE, in) == 0) return 0;
  off_t done = 0;
  for (;;) {
    ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0);
    if (n == 0) return 0;
    if (n > 0) {
      done += n;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return errno;
    break;  // this pair of filesystems can't: fall back below, from where it stopped
  }
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::pread(in, buf, sizeof buf, done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return 0;
    for (ssize_t w = 0; w < n;) {
      ssize_t m = ::pwrite(out, buf + w, static_cast<size_t>(n - w), done + w);
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) return errno;
      w += m;
    }
    done += n;
  }
}

}  // namespace

void copy_to_new_file(const fs::path& src, const fs::path& dst) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) throw_copy_error(src, dst, errno);
  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.get() < 0) throw_copy_error(src, dst, errno);
  if (int err = copy_contents(in.get(), out.get())) {
    ::unlink(dst.c_str());
    throw_copy_error(src, dst, err);
  }
}

PristineOverlays::PristineOverlays(fs::path cache_dir, OverlayMaker make)
    : cache_dir_(std::move(cache_dir)), make_(std::move(make)) {}

fs::path PristineOverlays::pristine(const BaseImage& base) {
  const fs::path path = cache_dir_ / pristine_name(base);
  if (::access(path.c_str(), R_OK) == 0) return path;

  std::lock_guard lock(build_mutex_);
  if (::access(path.c_str(), R_OK) == 0) return path;  // another thread built it meanwhile
  ensure_private_dir(cache_dir_);
  static std::atomic<unsigned> counter{0};
  const fs::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::error_code ec;
  try {
    make_(base.path, tmp);
    // Synced before it becomes visible: a pristine emptied by a crash would poison every copy.
    UniqueFd fd(::open(tmp.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0 || ::fsync(fd.get()) != 0) throw_copy_error(tmp, path, errno);
    fs::rename(tmp, path);  // atomic: a concurrent vial either sees a whole pristine or none
  } catch (const fs::filesystem_error& e) {
    fs::remove(tmp, ec);
    throw StorageDaemonError(std::string("cannot store the pristine overlay: ") + e.what());
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  // Drop pristines of earlier versions of this base.
  const std::string prefix = path_prefix(base);
  for (const auto& entry : fs::directory_iterator(cache_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && entry.path() != path && name.find(".tmp-") == std::string::npos) {
      fs::remove(entry.path(), ec);
    }
  }
  return path;
}

void PristineOverlays::create(const fs::path& base, const fs::path& target) {
  copy_to_new_file(pristine(inspect_base_image(base)), target);
}

void create_overlay_fast(const fs::path& base, const fs::path& target) {
  static PristineOverlays cache(overlays_dir() / "pristine", [](const fs::path& b, const fs::path& t) {
    StorageDaemon daemon(run_dir());
    daemon.start();
    daemon.create_overlay(b, t);
  });
  cache.create(base, target);
}

}  // namespace vial
