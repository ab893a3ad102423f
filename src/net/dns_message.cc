#include "net/dns_message.h"

#include <algorithm>

namespace vial::net {
namespace {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxWireName = 255;     // RFC 1035 2.3.4, length octets included
constexpr size_t kMaxUdpReply = 512;     // no EDNS in the reply, so the classic UDP limit
constexpr size_t kAnswerSize = 16;       // pointer 2, type 2, class 2, ttl 4, rdlength 2, rdata 4
constexpr uint16_t kFlagQr = 0x8000;
constexpr uint16_t kFlagRd = 0x0100;
constexpr uint16_t kFlagRa = 0x0080;

uint16_t be16(std::string_view p, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[at]) << 8) | static_cast<uint8_t>(p[at + 1]));
}

void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v >> 16));
  put16(out, static_cast<uint16_t>(v & 0xffff));
}

std::string header(uint16_t id, uint16_t flags, uint16_t qdcount, uint16_t ancount) {
  std::string out;
  put16(out, id);
  put16(out, flags);
  put16(out, qdcount);
  put16(out, ancount);
  put16(out, 0);  // NSCOUNT
  put16(out, 0);  // ARCOUNT
  return out;
}

}  // namespace

std::optional<DnsQuery> parse_dns_query(std::string_view packet) {
  if (packet.size() < kHeaderSize || packet.size() > kMaxDnsQuery) return std::nullopt;
  const uint16_t flags = be16(packet, 2);
  if ((flags & kFlagQr) || ((flags >> 11) & 0xf) != 0) return std::nullopt;
  if (be16(packet, 4) != 1 || be16(packet, 6) != 0 || be16(packet, 8) != 0) return std::nullopt;

  DnsQuery q;
  q.id = be16(packet, 0);
  q.recursion_desired = flags & kFlagRd;
  size_t at = kHeaderSize;
  for (;;) {
    if (at >= packet.size()) return std::nullopt;
    const uint8_t len = static_cast<uint8_t>(packet[at]);
    if (len == 0) break;
    // 0xC0 is a compression pointer, 0x40/0x80 are obsolete label types: none belong here.
    if (len & 0xc0) return std::nullopt;
    if (at + 1 + len > packet.size() || at + 1 + len - kHeaderSize + 1 > kMaxWireName) return std::nullopt;
    if (!q.name.empty()) q.name.push_back('.');
    for (size_t i = at + 1; i < at + 1 + len; ++i) {
      char c = packet[i];
      // A '.' or an unprintable byte inside a label could not be told apart in q.name.
      if (c <= ' ' || c > '~' || c == '.') return std::nullopt;
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      q.name.push_back(c);
    }
    at += 1 + len;
  }
  at += 1;  // the root label
  if (at + 4 > packet.size()) return std::nullopt;
  q.qtype = be16(packet, at);
  q.qclass = be16(packet, at + 2);
  q.question_end = at + 4;
  return q;
}

std::string build_dns_reply(std::string_view packet, const DnsQuery& query, DnsRcode rcode,
                            const std::vector<uint32_t>& a_records, uint32_t ttl) {
  if (query.question_end < kHeaderSize || query.question_end > packet.size()) return {};  // not this packet's query
  const std::string_view question = packet.substr(kHeaderSize, query.question_end - kHeaderSize);
  size_t answers = query.qtype == kDnsTypeA && query.qclass == kDnsClassIN ? a_records.size() : 0;
  // Fewer addresses rather than a reply the guest's resolver would have to retry over TCP.
  const size_t room = kMaxUdpReply - std::min(kMaxUdpReply, kHeaderSize + question.size());
  answers = std::min(answers, room / kAnswerSize);

  const uint16_t flags = kFlagQr | (query.recursion_desired ? kFlagRd : 0) | kFlagRa | static_cast<uint16_t>(rcode);
  std::string out = header(query.id, flags, 1, static_cast<uint16_t>(answers));
  out.append(question);
  for (size_t i = 0; i < answers; ++i) {
    put16(out, 0xc000 | kHeaderSize);  // the name: a pointer to the question's
    put16(out, kDnsTypeA);
    put16(out, kDnsClassIN);
    put32(out, ttl);
    put16(out, 4);
    put32(out, a_records[i]);
  }
  return out;
}

std::string build_dns_error(std::string_view packet, DnsRcode rcode) {
  if (packet.size() < kHeaderSize) return {};
  const uint16_t flags = be16(packet, 2);
  if (flags & kFlagQr) return {};  // never answer an answer: no reflection loops
  const uint16_t echoed = flags & (0x7800 | kFlagRd);  // OPCODE and RD, as RFC 1035 asks
  return header(be16(packet, 0), kFlagQr | echoed | kFlagRa | static_cast<uint16_t>(rcode), 0, 0);
}

}  // namespace vial::net
