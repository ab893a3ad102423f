// vial's DNS messages: strict parsing of a (hostile) guest's query and exact reply bytes.
#include "net/dns_message.h"

#include <string>

#include <gtest/gtest.h>

namespace vial::net {
namespace {

using namespace std::string_literals;

std::string u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }

std::string header(uint16_t id, uint16_t flags, uint16_t qd, uint16_t an = 0, uint16_t ns = 0, uint16_t ar = 0) {
  return u16(id) + u16(flags) + u16(qd) + u16(an) + u16(ns) + u16(ar);
}

std::string wire_name(const std::vector<std::string>& labels) {
  std::string out;
  for (const std::string& l : labels) out += static_cast<char>(l.size()) + l;
  return out + '\0';
}

// An EDNS(0) OPT pseudo-record: root name, type 41, UDP size 4096, no options.
const std::string kOpt = "\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"s;

// A query for example.com A/IN with RD, as a stub resolver sends it.
const std::string kQuery = "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                           "\x07" "Example\x03" "COM\x00"
                           "\x00\x01\x00\x01"s;

TEST(DnsMessage, ParsesAHandMadeQuery) {
  auto q = parse_dns_query(kQuery);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, 0x1234);
  EXPECT_TRUE(q->recursion_desired);
  EXPECT_EQ(q->name, "example.com");
  EXPECT_EQ(q->qtype, kDnsTypeA);
  EXPECT_EQ(q->qclass, kDnsClassIN);
  EXPECT_EQ(q->question_end, kQuery.size());
}

TEST(DnsMessage, IgnoresEdnsInAdditional) {
  std::string packet =
      header(7, 0, 1, 0, 0, 1) + wire_name({"pypi", "org"}) + u16(kDnsTypeAAAA) + u16(kDnsClassIN) + kOpt;
  auto q = parse_dns_query(packet);
  ASSERT_TRUE(q);
  EXPECT_FALSE(q->recursion_desired);
  EXPECT_EQ(q->name, "pypi.org");
  EXPECT_EQ(q->qtype, kDnsTypeAAAA);
  EXPECT_EQ(q->question_end, packet.size() - kOpt.size());
}

TEST(DnsMessage, ParsesTheRootName) {
  auto q = parse_dns_query(header(1, 0, 1) + "\0"s + u16(2) + u16(kDnsClassIN));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->name, "");
  EXPECT_EQ(q->qtype, 2);
}

TEST(DnsMessage, RefusesWhatIsNotOneStandardQuery) {
  const std::string question = wire_name({"a", "com"}) + u16(1) + u16(1);
  EXPECT_TRUE(parse_dns_query(header(1, 0x0100, 1) + question));
  EXPECT_FALSE(parse_dns_query(header(1, 0x8100, 1) + question));           // a response
  EXPECT_FALSE(parse_dns_query(header(1, 0x0800, 1) + question));           // IQUERY
  EXPECT_FALSE(parse_dns_query(header(1, 0x1000, 1) + question));           // STATUS
  EXPECT_FALSE(parse_dns_query(header(1, 0x2800, 1) + question));           // UPDATE
  EXPECT_FALSE(parse_dns_query(header(1, 0, 0)));                           // no question
  EXPECT_FALSE(parse_dns_query(header(1, 0, 2) + question + question));     // two
  EXPECT_FALSE(parse_dns_query(header(1, 0, 1, 1) + question));             // an answer
  EXPECT_FALSE(parse_dns_query(header(1, 0, 1, 0, 1) + question));          // an authority
  std::string big = header(1, 0, 1, 0, 0, 1) + question;
  big.resize(kMaxDnsQuery, '\0');
  EXPECT_TRUE(parse_dns_query(big));
  big.push_back('\0');
  EXPECT_FALSE(parse_dns_query(big));
}

TEST(DnsMessage, RefusesCompressionPointersAndOddLabels) {
  auto parses = [](const std::string& name) {
    return parse_dns_query(header(1, 0, 1) + name + u16(1) + u16(1)).has_value();
  };
  EXPECT_FALSE(parses("\xc0\x0c"s));                  // pointer at the start
  EXPECT_FALSE(parses("\x03www\xc0\x0c"s));           // pointer after a label
  EXPECT_FALSE(parses("\x40" + std::string(64, 'a') + '\0'));  // extended label type
  EXPECT_FALSE(parses("\x80\x01x\0"s));               // reserved label type
  EXPECT_FALSE(parses("\x03" "a.b\x00"s));            // a dot inside a label
  EXPECT_FALSE(parses("\x03" "a b\x00"s));
  EXPECT_FALSE(parses("\x03" "a\x00" "b\x00"s));
  EXPECT_FALSE(parses("\x03" "a\xff" "b\x00"s));
  EXPECT_TRUE(parses("\x03" "_-*\x00"s));             // odd but unambiguous: resolve() judges it
  EXPECT_TRUE(parses(wire_name({std::string(63, 'a')})));
}

TEST(DnsMessage, NamesAreAtMost255BytesOnTheWire) {
  const std::string l63(63, 'a');
  // (1 + 63) * 3 + (1 + 61) + 1 = 255
  auto q = parse_dns_query(header(1, 0, 1) + wire_name({l63, l63, l63, std::string(61, 'b')}) + u16(1) + u16(1));
  ASSERT_TRUE(q);
  EXPECT_EQ(q->name.size(), 253u);
  EXPECT_FALSE(parse_dns_query(header(1, 0, 1) + wire_name({l63, l63, l63, std::string(62, 'b')}) + u16(1) + u16(1)));
}

TEST(DnsMessage, TruncatedPacketsAreRefusedAtEveryLength) {
  const std::string packet = kQuery.substr(0, 2) + "\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01"s +
                             kQuery.substr(12) + kOpt;
  ASSERT_TRUE(parse_dns_query(packet));
  for (size_t n = 0; n < kQuery.size(); ++n) {
    EXPECT_FALSE(parse_dns_query(packet.substr(0, n))) << n;
  }
  // The additional section is not read, so cutting into it changes nothing.
  for (size_t n = kQuery.size(); n <= packet.size(); ++n) EXPECT_TRUE(parse_dns_query(packet.substr(0, n))) << n;
}

TEST(DnsMessage, SurvivesEverySingleByteMutation) {
  // Under the sanitizers this catches any read out of bounds.
  const std::string packet = header(9, 0x0100, 1, 0, 0, 1) + wire_name({"files", "pythonhosted", "org"}) + u16(1) +
                             u16(1) + kOpt;
  for (size_t i = 0; i < packet.size(); ++i) {
    for (int v : {0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff}) {
      std::string p = packet;
      p[i] = static_cast<char>(v);
      for (size_t n : {p.size(), i + 1}) {
        std::string_view cut(p.data(), n);
        if (auto q = parse_dns_query(cut)) {
          EXPECT_LE(q->question_end, n);
          (void)build_dns_reply(cut, *q, DnsRcode::noerror, {0x01020304});
        }
        (void)build_dns_error(cut, DnsRcode::formerr);
      }
    }
  }
}

TEST(DnsMessage, ReplyBytesAreExact) {
  auto q = parse_dns_query(kQuery);
  ASSERT_TRUE(q);
  std::string reply = build_dns_reply(kQuery, *q, DnsRcode::noerror, {0x01020304, 0xc0a80001}, 300);
  const std::string expected = "\x12\x34\x81\x80\x00\x01\x00\x02\x00\x00\x00\x00"s +  // QR RD RA, 1 q, 2 a
                               kQuery.substr(12) +                                     // the question as sent
                               "\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\x01\x02\x03\x04"s +
                               "\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\xa8\x00\x01"s;
  EXPECT_EQ(reply, expected);
  // What a guest gets back is an answer, not something vial would answer again.
  EXPECT_FALSE(parse_dns_query(reply));
}

TEST(DnsMessage, ReplyDropsEdnsAndCopiesRd) {
  std::string packet = header(0xbeef, 0, 1, 0, 0, 1) + wire_name({"pypi", "org"}) + u16(1) + u16(1) + kOpt;
  auto q = parse_dns_query(packet);
  ASSERT_TRUE(q);
  std::string reply = build_dns_reply(packet, *q, DnsRcode::nxdomain);
  EXPECT_EQ(reply, header(0xbeef, 0x8083, 1) + wire_name({"pypi", "org"}) + u16(1) + u16(1));
}

TEST(DnsMessage, AddressesOnlyForAInQuestions) {
  for (auto [qtype, qclass] : {std::pair<uint16_t, uint16_t>{kDnsTypeAAAA, kDnsClassIN}, {kDnsTypeA, 3}, {16, 1}}) {
    std::string packet = header(1, 0x0100, 1) + wire_name({"a", "com"}) + u16(qtype) + u16(qclass);
    auto q = parse_dns_query(packet);
    ASSERT_TRUE(q);
    EXPECT_EQ(build_dns_reply(packet, *q, DnsRcode::noerror, {0x01020304}),
              header(1, 0x8180, 1) + packet.substr(12));
  }
}

TEST(DnsMessage, ReplyFitsInAUdpDatagram) {
  auto q = parse_dns_query(kQuery);
  ASSERT_TRUE(q);
  std::vector<uint32_t> many(100, 0x01020304);
  std::string reply = build_dns_reply(kQuery, *q, DnsRcode::noerror, many);
  const size_t answers = (512 - kQuery.size()) / 16;
  EXPECT_EQ(reply.size(), kQuery.size() + answers * 16);
  EXPECT_EQ(reply.substr(6, 2), u16(static_cast<uint16_t>(answers)));
}

TEST(DnsMessage, ReplyRefusesAQueryFromAnotherPacket) {
  auto q = parse_dns_query(kQuery);
  ASSERT_TRUE(q);
  EXPECT_EQ(build_dns_reply(kQuery.substr(0, 20), *q, DnsRcode::noerror), "");
}

TEST(DnsMessage, ErrorRepliesAreHeaderOnly) {
  EXPECT_EQ(build_dns_error("", DnsRcode::formerr), "");
  EXPECT_EQ(build_dns_error(kQuery.substr(0, 11), DnsRcode::formerr), "");
  EXPECT_EQ(build_dns_error(header(5, 0x8000, 1), DnsRcode::formerr), "");  // never answer a response
  EXPECT_EQ(build_dns_error(kQuery, DnsRcode::formerr), header(0x1234, 0x8181, 0));
  // NOTIMP for a STATUS query with RD: opcode and RD echoed.
  EXPECT_EQ(build_dns_error(header(0xabcd, 0x1100, 0), DnsRcode::notimp), header(0xabcd, 0x9184, 0));
  // Garbage after the header is not looked at.
  EXPECT_EQ(build_dns_error(header(3, 0, 9, 9, 9, 9) + "\xc0"s, DnsRcode::formerr), header(3, 0x8081, 0));
}

}  // namespace
}  // namespace vial::net
