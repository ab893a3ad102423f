// Ctrl-C for the synchronous pack steps: a guard turns SIGINT/SIGTERM into a flag, the steps
// check it between units of work and throw Error(cancelled), so RAII removes every temp file.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "util/error.h"

namespace vial::pack {

// While alive, SIGINT and SIGTERM set the interrupted flag instead of killing the process.
// The previous handlers come back when it is destroyed. One at a time (the CLI holds it).
class InterruptGuard final {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};

// True once SIGINT/SIGTERM arrived under an InterruptGuard.
bool interrupted();
// Throws Error(cancelled) if interrupted().
void throw_if_interrupted();

// Runs a helper tool (mkfs.ext4, qemu-img, docker) to completion with its output in `log`.
// Kills it and throws Error(cancelled) on an interrupt; throws Error(on_failure) naming `what`
// and quoting the end of its output when it fails.
void run_tool(const std::vector<std::string>& argv, const std::string& what, const std::filesystem::path& log,
              ErrorKind on_failure = ErrorKind::internal);

}  // namespace vial::pack
