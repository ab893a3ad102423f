// Durations as scripts write them: `30` (seconds), `30s`, `2m`, `1h`.
#pragma once

#include <chrono>
#include <string>

namespace vial::machine {

// Throws Error(invalid_input) naming `what` on anything else, zero included.
std::chrono::milliseconds parse_duration(const std::string& text, const std::string& what);

}  // namespace vial::machine
