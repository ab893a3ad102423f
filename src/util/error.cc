#include "util/error.h"

#include <cstring>

namespace vial {

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_input: return "invalid_input";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::conflict: return "conflict";
    case ErrorKind::unavailable: return "unavailable";
    case ErrorKind::boot_failed: return "boot_failed";
    case ErrorKind::timeout: return "timeout";
    case ErrorKind::capacity: return "capacity";
    case ErrorKind::too_large: return "too_large";
    case ErrorKind::cancelled: return "cancelled";
    case ErrorKind::internal: return "internal";
  }
  return "internal";
}

void throw_errno(const std::string& what, int err) {
  throw Error(ErrorKind::internal, what + ": " + std::strerror(err));
}

}  // namespace vial
