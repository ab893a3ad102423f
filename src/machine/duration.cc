#include "machine/duration.h"

#include <cstdint>

#include "util/error.h"

namespace vial::machine {

std::chrono::milliseconds parse_duration(const std::string& text, const std::string& what) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  const std::string unit = text.substr(digits);
  uint64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  if (unit == "m") scale = 60;
  if (unit == "h") scale = 3600;
  uint64_t value = 0;
  bool ok = digits > 0 && digits <= 9 && scale > 0;
  if (ok) value = std::stoull(text.substr(0, digits)) * scale;
  if (!ok || value == 0 || value > 24u * 3600 * 30) {
    throw Error(ErrorKind::invalid_input, what + " '" + text +
                                              "' is not a duration: use seconds like 30 or 30s, 2m, 1h "
                                              "(at most 30 days, more than 0)");
  }
  return std::chrono::seconds(value);
}

}  // namespace vial::machine
