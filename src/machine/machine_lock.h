// One exclusive flock per machine: start, stop and delete of the same machine take turns,
// across processes. Released when the lock object goes out of scope (or the process dies).
#pragma once

#include <filesystem>

#include "util/unique_fd.h"

namespace vial::machine {

class MachineLock final {
 public:
  // Blocks until the lock on `file` (created if missing) is ours. Throws Error.
  explicit MachineLock(const std::filesystem::path& file);

 private:
  UniqueFd fd_;
};

}  // namespace vial::machine
