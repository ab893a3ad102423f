#include "util/fnv.h"

#include <gtest/gtest.h>

#include "vm/template.h"

namespace vial {
namespace {

// Published FNV-1a 64 test vectors: names built from this hash must never change.
TEST(Fnv64, MatchesReferenceVectors) {
  EXPECT_EQ(Fnv64().hex(), "cbf29ce484222325");
  EXPECT_EQ(Fnv64().add("a").hex(), "af63dc4c8601ec8c");
  EXPECT_EQ(Fnv64().add("foobar").hex(), "85944171f73967e8");
  EXPECT_EQ(Fnv64().add("foo").add("bar").value(), Fnv64().add("foobar").value());
}

TEST(Fnv64, AddValueHashesTheBytes) {
  const uint32_t v = 0x04030201;
  EXPECT_EQ(Fnv64().add_value(v).hex(), Fnv64().add(std::string_view("\x01\x02\x03\x04", 4)).hex());
}

TEST(Fnv64, TemplateStableHashIsFnv1a) { EXPECT_EQ(stable_hash("foobar"), "85944171f73967e8"); }

}  // namespace
}  // namespace vial
