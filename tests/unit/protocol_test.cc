#include "agent/protocol.h"

#include <gtest/gtest.h>

#include <cstring>

namespace {

using namespace vial::agent;
using nlohmann::json;

std::vector<FrameDecoder::Item> drain(FrameDecoder& d) {
  std::vector<FrameDecoder::Item> items;
  while (auto it = d.next()) items.push_back(std::move(*it));
  return items;
}

TEST(Protocol, EncodeLayoutIsLittleEndian) {
  std::string f = encode_frame(FrameType::exec, 0x01020304, "ab");
  ASSERT_EQ(f.size(), kHeaderSize + 2);
  EXPECT_EQ(std::string(f.data(), 4), std::string("\x02\x00\x00\x00", 4));
  EXPECT_EQ(static_cast<uint8_t>(f[4]), 4);
  EXPECT_EQ(std::string(f.data() + 5, 4), std::string("\x04\x03\x02\x01", 4));
  EXPECT_EQ(f.substr(9), "ab");
}

TEST(Protocol, AppendRejectsOversizedPayload) {
  std::string out;
  EXPECT_THROW(append_frame(out, FrameType::stdout_, 1, std::string(kMaxPayload + 1, 'x')),
               std::length_error);
  EXPECT_NO_THROW(append_frame(out, FrameType::stdout_, 1, std::string(kMaxPayload, 'x')));
}

TEST(Protocol, DecodeByteByByte) {
  std::string stream = encode_frame(FrameType::hello, 1, R"({"version":1})") +
                       encode_frame(FrameType::ping, 2, "") +
                       encode_frame(FrameType::stdout_, 3, std::string("\0\xff\n", 3));
  FrameDecoder d;
  std::vector<Frame> frames;
  for (char c : stream) {
    d.feed(std::string_view(&c, 1));
    for (auto& it : drain(d)) {
      ASSERT_TRUE(it.frame);
      frames.push_back(*it.frame);
    }
  }
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, FrameType::hello);
  EXPECT_EQ(frames[1].type, FrameType::ping);
  EXPECT_EQ(frames[1].request_id, 2u);
  EXPECT_EQ(frames[2].payload, std::string("\0\xff\n", 3));
  EXPECT_EQ(d.pending(), 0u);
}

TEST(Protocol, UnknownTypeIsErrorAndSkipped) {
  std::string bad = encode_frame(FrameType::ping, 9, "zz");
  bad[4] = 0;
  FrameDecoder d;
  d.feed(bad + encode_frame(FrameType::ping, 10, ""));
  auto items = drain(d);
  ASSERT_EQ(items.size(), 2u);
  ASSERT_TRUE(items[0].error);
  EXPECT_EQ(items[0].error->request_id, 9u);
  ASSERT_TRUE(items[1].frame);
  EXPECT_EQ(items[1].frame->request_id, 10u);
}

TEST(Protocol, OversizedFrameSkippedAcrossFeeds) {
  std::string header = encode_frame(FrameType::exec, 7, "");
  uint32_t len = kMaxPayload + 5;
  for (int i = 0; i < 4; ++i) header[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  FrameDecoder d;
  d.feed(header);
  auto items = drain(d);
  ASSERT_EQ(items.size(), 1u);
  ASSERT_TRUE(items[0].error);
  EXPECT_EQ(items[0].error->request_id, 7u);
  // The payload arrives in pieces, then a good frame in the same chunk as the tail.
  std::string body(len, 'x');
  d.feed(body.substr(0, 1000));
  EXPECT_TRUE(drain(d).empty());
  d.feed(body.substr(1000) + encode_frame(FrameType::ping, 8, ""));
  items = drain(d);
  ASSERT_EQ(items.size(), 1u);
  ASSERT_TRUE(items[0].frame);
  EXPECT_EQ(items[0].frame->type, FrameType::ping);
  EXPECT_EQ(items[0].frame->request_id, 8u);
}

TEST(Protocol, TypeNames) {
  EXPECT_EQ(type_name(FrameType::stdin_), "stdin");
  EXPECT_TRUE(is_known_type(10));
  EXPECT_TRUE(is_known_type(11));
  EXPECT_TRUE(is_known_type(12));
  EXPECT_FALSE(is_known_type(0));
  EXPECT_TRUE(is_known_type(13));
  EXPECT_TRUE(is_known_type(20));
  EXPECT_FALSE(is_known_type(21));
  EXPECT_EQ(type_name(FrameType::reseed), "reseed");
  EXPECT_EQ(type_name(FrameType::ok), "ok");
  EXPECT_EQ(type_name(FrameType::dns), "dns");
  EXPECT_TRUE(is_net_type(FrameType::net_open));
  EXPECT_TRUE(is_net_type(FrameType::dns));
  EXPECT_FALSE(is_net_type(FrameType::net_up));  // a request with an answer, not a stream frame
}

TEST(Protocol, NetBodiesValidate) {
  auto open = parse_body<NetOpenBody>(R"({"ip":"1.2.3.4","port":443})");
  EXPECT_EQ(open.ip, "1.2.3.4");
  EXPECT_EQ(open.port, 443);
  EXPECT_THROW(parse_body<NetOpenBody>(R"({"ip":"1.2.3.4","port":0})"), std::invalid_argument);
  EXPECT_THROW(parse_body<NetOpenBody>(R"({"ip":"1.2.3.4","port":65536})"), std::invalid_argument);
  EXPECT_THROW(parse_body<NetOpenBody>(R"({"ip":5,"port":80})"), std::invalid_argument);
  EXPECT_EQ(parse_body<NetAckBody>(R"({"bytes":65536})").bytes, 65536u);
  EXPECT_THROW(parse_body<NetAckBody>(R"({"bytes":-1})"), std::invalid_argument);
  EXPECT_EQ(parse_body<NetUpBody>("{}").dns, "127.0.0.1");
}

TEST(Protocol, ExecRequestDefaultsAndRoundTrip) {
  auto r = parse_body<ExecRequest>(R"({"argv":["ls","-l"]})");
  EXPECT_EQ(r.argv, (std::vector<std::string>{"ls", "-l"}));
  EXPECT_EQ(r.timeout_ms, 30000u);
  EXPECT_FALSE(r.stdin_open);
  EXPECT_EQ(r.stdout_limit, 1u << 20);

  ExecRequest full;
  full.language = "python";
  full.code = "print(1)";
  full.env = {{"A", "b"}};
  full.cwd = "/tmp";
  full.stdin_open = true;
  full.timeout_ms = 5;
  full.stdout_limit = 10;
  full.stderr_limit = 11;
  json j = full;
  auto back = j.get<ExecRequest>();
  EXPECT_EQ(back.language, "python");
  EXPECT_EQ(back.code, "print(1)");
  EXPECT_EQ(back.env.at("A"), "b");
  EXPECT_EQ(back.cwd, "/tmp");
  EXPECT_TRUE(back.stdin_open);
  EXPECT_EQ(back.timeout_ms, 5u);
  EXPECT_EQ(back.stdout_limit, 10u);
  EXPECT_EQ(back.stderr_limit, 11u);
  EXPECT_FALSE(back.as_root);
  EXPECT_EQ(back.session, "");
  EXPECT_FALSE(json(full).contains("as_root")) << "defaults stay off the wire";
  EXPECT_FALSE(json(full).contains("session"));
  full.as_root = true;
  full.session = "nb-1";
  back = json(full).get<ExecRequest>();
  EXPECT_TRUE(back.as_root);
  EXPECT_EQ(back.session, "nb-1");
  // Signed JSON integers (as built in C++) are accepted too.
  EXPECT_EQ(json({{"argv", {"x"}}, {"timeout_ms", 7}}).get<ExecRequest>().timeout_ms, 7u);
}

TEST(Protocol, ExecRequestRejectsInvalid) {
  for (const char* bad : {
           "{}", "[]", "1", "{not json", R"({"argv":[]})", R"({"argv":"ls"})",
           R"({"argv":["ls"],"code":"x","language":"shell"})", R"({"code":"x"})",
           R"({"code":"x","language":"cobol"})", R"({"argv":["ls"],"timeout_ms":0})",
           R"({"argv":["ls"],"timeout_ms":-1})", R"({"argv":["ls"],"timeout_ms":"5"})",
           R"({"argv":["ls"],"stdin":1})", R"({"argv":["ls"],"env":{"A":1}})",
           R"({"argv":["ls"],"stdout_limit":-5})", R"({"argv":[1]})",
           R"({"argv":["ls"],"as_root":1})", R"({"argv":["ls"],"session":"s"})",
           R"({"code":"x","language":"shell","session":"s"})",
           R"({"code":"x","language":"python","session":7})"}) {
    EXPECT_THROW(parse_body<ExecRequest>(bad), std::invalid_argument) << bad;
  }
}

TEST(Protocol, ExecResultRoundTrip) {
  ExecResult r;
  r.signal = 9;
  r.timed_out = true;
  r.stdout_truncated = true;
  r.wall_ms = 12;
  r.cpu_ms = 3;
  r.max_rss_kib = 2048;
  r.warm = true;
  json j = r;
  EXPECT_TRUE(j["exit_code"].is_null());
  EXPECT_EQ(j["signal"], 9);
  auto back = j.get<ExecResult>();
  EXPECT_FALSE(back.exit_code);
  EXPECT_EQ(back.signal, 9);
  EXPECT_TRUE(back.timed_out);
  EXPECT_TRUE(back.stdout_truncated);
  EXPECT_FALSE(back.stderr_truncated);
  EXPECT_EQ(back.wall_ms, 12u);
  EXPECT_EQ(back.cpu_ms, 3u);
  EXPECT_EQ(back.max_rss_kib, 2048u);
  EXPECT_TRUE(back.warm);
  EXPECT_FALSE(json(ExecResult{}).get<ExecResult>().warm);
}

TEST(Protocol, ErrorAndHelloBodies) {
  auto e = parse_body<ErrorBody>(json(ErrorBody{"busy", "x"}).dump());
  EXPECT_EQ(e.code, "busy");
  EXPECT_EQ(e.message, "x");
  auto h = parse_body<HelloBody>(R"({"version":1})");
  EXPECT_EQ(h.version, 1u);
  EXPECT_TRUE(h.agent.empty());
  EXPECT_THROW(parse_body<HelloBody>(R"({"version":"1"})"), std::invalid_argument);
  EXPECT_THROW(parse_body<HelloBody>("{}"), std::invalid_argument);
  EXPECT_TRUE(h.warm.empty());
  EXPECT_FALSE(h.parked);
  HelloBody w{1, "a", "k", {"python"}, {"python"}, false};
  EXPECT_FALSE(json(w).contains("parked")) << "older hosts never see the field";
  auto hw = parse_body<HelloBody>(json(w).dump());
  EXPECT_EQ(hw.warm, std::vector<std::string>{"python"});
  w.parked = true;
  EXPECT_TRUE(parse_body<HelloBody>(json(w).dump()).parked);
  EXPECT_THROW(parse_body<HelloBody>(R"({"version":1,"parked":"yes"})"), std::invalid_argument);
}

TEST(Protocol, ReseedBody) {
  std::string bytes;
  for (int i = 0; i < 64; ++i) bytes.push_back(static_cast<char>(i * 5 + 200));
  ReseedBody b{bytes, 1700000000123456789LL};
  json j = b;
  EXPECT_EQ(j["entropy"].get<std::string>().size(), 128u);
  EXPECT_EQ(j["entropy"].get<std::string>().substr(0, 4), "c8cd");
  auto back = parse_body<ReseedBody>(j.dump());
  EXPECT_EQ(back.entropy, bytes);
  EXPECT_EQ(back.realtime_ns, 1700000000123456789LL);
  // Uppercase hex is fine, the clock is optional.
  auto up = parse_body<ReseedBody>(json{{"entropy", std::string(128, 'A')}}.dump());
  EXPECT_EQ(up.entropy, std::string(64, '\xaa'));
  EXPECT_FALSE(up.realtime_ns);
  for (const char* bad : {R"({})", R"({"entropy": 5})", R"({"entropy": "abc"})",
                          R"({"entropy": "zz"})", R"([1])"})
    EXPECT_THROW(parse_body<ReseedBody>(bad), std::invalid_argument) << bad;
  EXPECT_THROW(parse_body<ReseedBody>(json{{"entropy", std::string(126, '0')}}.dump()),
               std::invalid_argument);
  EXPECT_THROW(parse_body<ReseedBody>(json{{"entropy", std::string(130, '0')}}.dump()),
               std::invalid_argument);
  EXPECT_THROW(parse_body<ReseedBody>(json{{"entropy", std::string(127, '0') + "g"}}.dump()),
               std::invalid_argument);
  EXPECT_THROW(
      parse_body<ReseedBody>(json{{"entropy", std::string(128, '0')}, {"realtime_ns", -1}}.dump()),
      std::invalid_argument);
  EXPECT_THROW(
      parse_body<ReseedBody>(json{{"entropy", std::string(128, '0')}, {"realtime_ns", "1"}}.dump()),
      std::invalid_argument);
}

}  // namespace
