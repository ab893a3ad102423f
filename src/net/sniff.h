// Reads the name a guest's connection presents in its first bytes: the SNI of a TLS
// ClientHello, or the Host header of a plain HTTP request. The gateway holds the guest's
// first bytes until this decides, so a name can be checked before anything is forwarded.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace vial::net {

// Longest prefix the gateway buffers to decide: a TLS record (5 + 16384) or an HTTP head.
inline constexpr size_t kMaxSniff = 5 + 16384;

enum class Sniff {
  need_more,  // a TLS record or HTTP head that is not complete yet (and under kMaxSniff)
  tls,        // a complete ClientHello: name is its SNI host_name, "" if it has none
  http,       // an HTTP/1.x request head: name is its Host header without the port, "" if none
  other,      // neither (or malformed, or over kMaxSniff): no name
};

struct Sniffed {
  Sniff kind = Sniff::need_more;
  std::string name;  // lowercased, no trailing dot, port stripped; raw IPv4 literal kept as is
};

// Decides from the bytes the guest has sent so far (all of them, from the first).
// Malformed TLS (lengths that overrun, a handshake that is not a ClientHello) is `other` with
// no name; a TLS ClientHello split over several records is read from the first record only.
Sniffed sniff(std::string_view first_bytes);

}  // namespace vial::net
