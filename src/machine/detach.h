// Starting a daemon: a process that outlives the command that started it (the machine
// supervisor). util/process.h's Child is the opposite (it dies with its parent).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace vial::machine {

// Starts argv[0] (an absolute path) in a new session, reparented away from this process
// (double fork, so it never becomes our zombie), with stdin from /dev/null, stdout and stderr
// appended to `log`, and `keep_fd` (if >= 0) as its fd 3; every other fd is closed. Returns
// once the daemon has been forked; throws Error if it could not be.
void spawn_daemon(const std::vector<std::string>& argv, const std::filesystem::path& log, int keep_fd);

}  // namespace vial::machine
