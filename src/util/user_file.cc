#include "util/user_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"
#include "util/unique_fd.h"

namespace vial {

std::string read_user_file(const std::filesystem::path& path, uint64_t limit, const std::string& what) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) {
    throw Error(ErrorKind::invalid_input, "cannot read " + what + " " + path.string() + ": " + std::strerror(errno));
  }
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw Error(ErrorKind::invalid_input, what + " " + path.string() + " is not a regular file");
  }
  auto too_large = [&] {
    return Error(ErrorKind::too_large, what + " " + path.string() + " is larger than " + std::to_string(limit) +
                                           " bytes, the limit for it");
  };
  if (static_cast<uint64_t>(st.st_size) > limit) throw too_large();
  std::string data;
  data.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  // The file may grow while it is read: read to its end, never past the limit.
  for (;;) {
    if (got == data.size()) {
      if (data.size() >= limit + 1) throw too_large();
      data.resize(std::min<uint64_t>(limit + 1, data.size() + 65536));
    }
    ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(ErrorKind::invalid_input, "cannot read " + what + " " + path.string() + ": " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > limit) throw too_large();
  data.resize(got);
  return data;
}

}  // namespace vial
