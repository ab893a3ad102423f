#include "machine/machine_name.h"

#include "util/error.h"

namespace vial::machine {
namespace {

bool name_char(char c, bool first) {
  if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  return !first && (c == '_' || c == '.' || c == '-');
}

}  // namespace

void validate_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 63;
  for (size_t i = 0; ok && i < name.size(); ++i) ok = name_char(name[i], i == 0);
  if (!ok) {
    throw Error(ErrorKind::invalid_input,
                "invalid name '" + name +
                    "': use 1-63 characters a-z 0-9 _ . - starting with a letter or digit");
  }
}

}  // namespace vial::machine
