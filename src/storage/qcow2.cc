#include "storage/qcow2.h"

#include <endian.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "storage/storage_error.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

constexpr char kQcow2Magic[4] = {'Q', 'F', 'I', '\xfb'};
constexpr off_t kSizeOffset = 24;  // big-endian u64 virtual size (qcow2 spec, header field "size")
constexpr size_t kHeaderBytes = 32;

}  // namespace

BaseImage inspect_base_image(const fs::path& base) {
  BaseImage info;
  info.path = fs::absolute(base).lexically_normal();
  int fd = ::open(info.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw StorageDaemonError("Failed to get image info for " + info.path.string() + ": " + std::strerror(errno),
                             {}, errno == ENOENT ? ErrorKind::not_found : ErrorKind::invalid_input);
  }
  unsigned char header[kHeaderBytes] = {};
  struct stat st {};
  ssize_t n = ::pread(fd, header, sizeof header, 0);
  int err = errno;
  bool stat_ok = ::fstat(fd, &st) == 0;
  ::close(fd);
  if (n < 0 || !stat_ok) {
    throw StorageDaemonError("Failed to get image info for " + info.path.string() + ": " + std::strerror(err), {},
                             ErrorKind::invalid_input);
  }
  if (static_cast<size_t>(n) < kHeaderBytes || std::memcmp(header, kQcow2Magic, sizeof kQcow2Magic) != 0) {
    throw StorageDaemonError("Base image " + info.path.string() + " is not qcow2 format", {},
                             ErrorKind::invalid_input);
  }
  uint64_t be_size;
  std::memcpy(&be_size, header + kSizeOffset, sizeof be_size);
  info.virtual_size = be64toh(be_size);
  info.dev = st.st_dev;
  info.ino = st.st_ino;
  info.file_size = st.st_size;
  info.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return info;
}

}  // namespace vial
