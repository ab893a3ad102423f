// FNV-1a, 64 bit: a stable hash for names that must match across processes and builds
// (cache folders, file names). Not for security.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>

namespace vial {

class Fnv64 final {
 public:
  Fnv64& add(std::string_view bytes) {
    for (unsigned char c : bytes) h_ = (h_ ^ c) * kPrime;
    return *this;
  }
  // Adds the object representation of `v` (host byte order: fine for names on one machine).
  template <typename T>
  Fnv64& add_value(const T& v) {
    static_assert(std::is_trivially_copyable_v<T> && std::has_unique_object_representations_v<T>);
    return add(std::string_view(reinterpret_cast<const char*>(&v), sizeof v));
  }
  uint64_t value() const { return h_; }
  // 16 lowercase hex digits.
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h_));
    return buf;
  }

 private:
  static constexpr uint64_t kOffset = 0xcbf29ce484222325ULL;
  static constexpr uint64_t kPrime = 0x100000001b3ULL;
  uint64_t h_ = kOffset;
};

}  // namespace vial
