// SHA-256 (FIPS 180-4), incremental: packs record and verify a digest per part.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace vial::pack {

class Sha256 final {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // The digest as 64 lowercase hex digits; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Hex SHA-256 of a file's contents and its size. Throws Error when it can't be read.
struct FileDigest {
  uint64_t size = 0;
  std::string sha256;
};
FileDigest digest_file(const std::filesystem::path& path);

}  // namespace vial::pack
