// The few DNS messages vial's resolver speaks (RFC 1035): it parses a guest's query and
// builds the answer itself, so no guest byte ever reaches a real resolver. Every read is
// bounds-checked: the packet comes from a hostile guest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vial::net {

inline constexpr uint16_t kDnsTypeA = 1;
inline constexpr uint16_t kDnsTypeAAAA = 28;
inline constexpr uint16_t kDnsClassIN = 1;
// Largest query accepted (a UDP query is at most 512 bytes without EDNS; EDNS allows more).
inline constexpr size_t kMaxDnsQuery = 4096;

enum class DnsRcode : uint8_t { noerror = 0, formerr = 1, servfail = 2, nxdomain = 3, notimp = 4, refused = 5 };

struct DnsQuery {
  uint16_t id = 0;
  bool recursion_desired = false;
  std::string name;  // as on the wire, lowercased, dot-separated, no trailing dot ("" = root)
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  // Bytes of the header plus the one question: the reply copies them.
  size_t question_end = 0;
};

// A standard query (QR=0, OPCODE=0) with exactly one question, no compression pointers in it,
// at most kMaxDnsQuery bytes; answer/authority sections must be empty; additional records
// (EDNS OPT) are ignored. nullopt for anything else.
std::optional<DnsQuery> parse_dns_query(std::string_view packet);

// The reply to `query` (parsed from `packet`): same id and question, QR=1, RA=1, RD copied,
// the rcode, and one A record per address (host byte order) with `ttl`, name by a compression
// pointer to the question. Addresses are only written for A/IN questions.
std::string build_dns_reply(std::string_view packet, const DnsQuery& query, DnsRcode rcode,
                            const std::vector<uint32_t>& a_records = {}, uint32_t ttl = 60);

// For a packet parse_dns_query refused: a header-only reply with its id and `rcode` (FORMERR
// or NOTIMP), or "" when the packet is shorter than a header or is itself a response.
std::string build_dns_error(std::string_view packet, DnsRcode rcode);

}  // namespace vial::net
