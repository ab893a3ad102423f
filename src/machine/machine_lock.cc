#include "machine/machine_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "util/error.h"

namespace vial::machine {

MachineLock::MachineLock(const std::filesystem::path& file)
    : fd_(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
  if (!fd_.valid()) throw_errno("open lock file " + file.string(), errno);
  while (::flock(fd_.get(), LOCK_EX) != 0) {
    if (errno != EINTR) throw_errno("lock " + file.string(), errno);
  }
}

}  // namespace vial::machine
