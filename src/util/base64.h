// Base64 (RFC 4648, with padding) for binary file contents inside JSON.
#pragma once

#include <string>
#include <string_view>

namespace vial {

std::string base64_encode(std::string_view bytes);
// Throws Error(invalid_input) on characters outside the alphabet or a bad length.
std::string base64_decode(std::string_view text);

}  // namespace vial
