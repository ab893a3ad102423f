#include "pack/sha256.h"

#include <gtest/gtest.h>

#include <fstream>

#include "util/error.h"

namespace vial::pack {
namespace {

std::string sha(std::string_view s) {
  Sha256 h;
  h.update(s);
  return h.hex_digest();
}

TEST(PackSha256, KnownVectors) {
  EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(PackSha256, PiecewiseEqualsWhole) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(i * 7);
  for (size_t step : {1u, 3u, 63u, 64u, 65u, 999u}) {
    Sha256 h;
    for (size_t off = 0; off < data.size(); off += step) h.update(std::string_view(data).substr(off, step));
    EXPECT_EQ(h.hex_digest(), sha(data)) << "step " << step;
  }
}

TEST(PackSha256, DigestFile) {
  auto path = std::filesystem::temp_directory_path() / ("vial-sha-" + std::to_string(::getpid()));
  std::ofstream(path) << "abc";
  FileDigest d = digest_file(path);
  EXPECT_EQ(d.size, 3u);
  EXPECT_EQ(d.sha256, sha("abc"));
  std::filesystem::remove(path);
  EXPECT_THROW(digest_file(path), Error);
}

}  // namespace
}  // namespace vial::pack
