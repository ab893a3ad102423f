// Machine names: they become directory names and socket paths, so the alphabet is narrow.
#pragma once

#include <string>

namespace vial::machine {

// Throws Error(invalid_input) unless `name` matches [a-z0-9][a-z0-9_.-]{0,62}.
void validate_name(const std::string& name);

}  // namespace vial::machine
