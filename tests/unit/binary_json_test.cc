// Bytes inside the API's JSON (sandbox/run_json.h): valid UTF-8 as text, anything else as a
// `_base64` field, and every byte value back exactly after a trip through the JSON text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sandbox/run_json.h"
#include "util/error.h"

namespace vial {
namespace {

using nlohmann::json;

std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s += static_cast<char>(i);
  return s;
}

// What the server sends: the JSON text, parsed again by a client.
json wire(const json& j) { return json::parse(dump_json(j)); }

// nlohmann's own check (Hoehrmann's DFA), without an exception per string: invalid bytes become
// U+FFFD with `replace` and vanish with `ignore`, valid text is the same both ways.
bool nlohmann_accepts(const std::string& s) {
  const json j(s);
  return j.dump(-1, ' ', false, json::error_handler_t::replace) == j.dump(-1, ' ', false, json::error_handler_t::ignore);
}

TEST(Utf8, AcceptsAndRejects) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8(std::string("a\0b\n", 4)));
  EXPECT_TRUE(is_valid_utf8("\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"));  // é € 😀 U+10FFFF
  for (const char* bad : {"\xff\xfe", "\x80", "a\xbfz", "\xe2\x82", "\xe2\x82x", "\xf0\x9f\x98", "\xc0\xaf",
                          "\xc1\xbf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xed\xa0\x80", "\xed\xbf\xbf",
                          "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80"}) {
    EXPECT_FALSE(is_valid_utf8(bad)) << json(std::string(bad)).dump(-1, ' ', true, json::error_handler_t::replace);
  }
}

TEST(Utf8, AgreesWithTheJsonLibrary) {
  // Every 2-byte string, and 3/4-byte strings for every multibyte lead and second byte.
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      std::string s{static_cast<char>(a), static_cast<char>(b)};
      ASSERT_EQ(is_valid_utf8(s), nlohmann_accepts(s)) << a << " " << b;
      if (a < 0xe0) continue;
      for (int c : {0x41, 0x80, 0xbf, 0xc0}) {
        std::string three = s + static_cast<char>(c);
        ASSERT_EQ(is_valid_utf8(three), nlohmann_accepts(three)) << a << " " << b << " " << c;
        std::string four = three + '\x80';
        ASSERT_EQ(is_valid_utf8(four), nlohmann_accepts(four)) << a << " " << b << " " << c;
      }
    }
  }
}

TEST(BytesField, TextStaysTextOtherBytesGoBase64) {
  json j;
  put_bytes(j, "stdout", "h\xc3\xa9llo\n");
  EXPECT_EQ(j, json({{"stdout", "h\xc3\xa9llo\n"}}));
  json k;
  put_bytes(k, "stdout", "\xff\xfe\n");
  EXPECT_EQ(k, json({{"stdout_base64", "//4K"}}));
  EXPECT_EQ(get_bytes(wire(k), "stdout"), "\xff\xfe\n");
  EXPECT_EQ(get_bytes(json::object(), "stdout"), std::nullopt);
}

TEST(BytesField, EveryByteSurvivesTheWire) {
  const std::string all = all_bytes();
  for (const std::string& bytes : {all, all + all, std::string("\xff\xfe"), std::string("\x80"),
                                   std::string("ok \xe2\x82"), std::string("\xac tail"), std::string("\0", 1),
                                   std::string(all.substr(0, 128))}) {
    json j;
    put_bytes(j, "data", bytes);
    EXPECT_EQ(j.size(), 1u);
    EXPECT_EQ(j.contains("data"), is_valid_utf8(bytes));
    EXPECT_EQ(get_bytes(wire(j), "data"), bytes);
  }
}

TEST(BytesField, BadFormsNameTheField) {
  auto fails_naming = [](const json& j, const std::string& field) {
    try {
      get_bytes(j, "stdin");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_input);
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  fails_naming({{"stdin", "a"}, {"stdin_base64", "YQ=="}}, "not both");
  fails_naming({{"stdin_base64", "not base64!"}}, "stdin_base64");
  fails_naming({{"stdin_base64", 5}}, "stdin_base64");
  fails_naming({{"stdin", 5}}, "stdin");
}

TEST(BytesField, BinaryStdinInRunRequests) {
  const std::string all = all_bytes();
  RunRequest r = run_request_from_json({{"language", "python"}, {"code", "1"}, {"stdin_base64", "//4K"}}, 128);
  EXPECT_EQ(r.stdin_data, "\xff\xfe\n");
  r.stdin_data = all;
  json body = wire(run_request_to_json(r));
  EXPECT_FALSE(body.contains("stdin"));
  EXPECT_EQ(run_request_from_json(body, 128).stdin_data, all);
  r.stdin_data = "text\n";
  body = wire(run_request_to_json(r));
  EXPECT_EQ(body["stdin"], "text\n");
  EXPECT_EQ(run_request_from_json(body, 128).stdin_data, "text\n");
  EXPECT_THROW(run_request_from_json({{"language", "python"}, {"code", "1"}, {"stdin", "a"}, {"stdin_base64", "YQ=="}}, 128),
               Error);
}

TEST(BytesField, BinaryOutputInRunResults) {
  RunResult res;
  res.stdout_data = all_bytes() + "\xe2\x82";
  res.stderr_data = "plain \xe2\x82\xac\n";
  json j = wire(run_result_to_json(res, "tcg"));
  EXPECT_FALSE(j.contains("stdout"));
  EXPECT_TRUE(j["stdout_base64"].is_string());
  EXPECT_EQ(j["stderr"], "plain \xe2\x82\xac\n");
  RunResult back = run_result_from_json(j);
  EXPECT_EQ(back.stdout_data, res.stdout_data);
  EXPECT_EQ(back.stderr_data, res.stderr_data);
  json streamed = run_result_to_json(res, "tcg", /*include_output=*/false);
  EXPECT_FALSE(streamed.contains("stdout_base64"));
  EXPECT_FALSE(streamed.contains("stderr"));
}

}  // namespace
}  // namespace vial
