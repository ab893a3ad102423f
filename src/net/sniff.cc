#include "net/sniff.h"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace vial::net {
namespace {

constexpr size_t kTlsHeader = 5;
constexpr size_t kMaxTlsRecord = 16384;
constexpr uint8_t kTlsHandshake = 0x16;
constexpr uint8_t kClientHello = 1;
constexpr uint16_t kExtServerName = 0;
constexpr uint8_t kHostName = 0;
constexpr std::string_view kMethods[] = {"GET",     "POST",  "PUT",     "HEAD", "DELETE",
                                         "OPTIONS", "PATCH", "CONNECT", "TRACE"};

Sniffed other() { return {Sniff::other, ""}; }

// A cursor over one enclosing span: every read fails rather than leave it.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool empty() const { return s_.empty(); }
  std::string_view rest() const { return s_; }

  std::optional<size_t> number(size_t bytes) {
    if (s_.size() < bytes) return std::nullopt;
    size_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(s_[i]);
    s_.remove_prefix(bytes);
    return v;
  }
  std::optional<std::string_view> take(size_t n) {
    if (s_.size() < n) return std::nullopt;
    std::string_view out = s_.substr(0, n);
    s_.remove_prefix(n);
    return out;
  }
  // A vector with a `len_bytes`-byte length prefix.
  std::optional<std::string_view> vec(size_t len_bytes) {
    auto n = number(len_bytes);
    return n ? take(*n) : std::nullopt;
  }

 private:
  std::string_view s_;
};

// Lowercased, one trailing dot dropped; nullopt if it holds bytes no host name has (which a
// log line or a later check could misread).
std::optional<std::string> clean_name(std::string_view raw) {
  std::string name;
  for (char c : raw) {
    if (c <= ' ' || c > '~') return std::nullopt;
    name.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  }
  if (name.ends_with('.')) name.pop_back();
  return name;
}

// The server_name extension's body (RFC 6066 3): the first host_name entry.
Sniffed server_name(std::string_view data) {
  Reader ext(data);
  auto list = ext.vec(2);
  if (!list || !ext.empty()) return other();
  Reader entries(*list);
  while (!entries.empty()) {
    auto type = entries.number(1);
    auto host = entries.vec(2);
    if (!type || !host) return other();
    if (*type != kHostName) continue;
    auto name = host->empty() ? std::nullopt : clean_name(*host);
    if (!name) return other();
    return {Sniff::tls, *name};
  }
  return {Sniff::tls, ""};
}

Sniffed client_hello(std::string_view record) {
  Reader r(record);
  auto type = r.number(1);
  auto length = r.number(3);
  if (!type || *type != kClientHello || !length) return other();
  // A hello longer than this record continues in the next one: read what this one holds.
  const bool complete = *length <= r.rest().size();
  Reader hello(r.rest().substr(0, *length));
  if (!hello.take(2) || !hello.take(32) || !hello.vec(1) || !hello.vec(2) || !hello.vec(1)) return other();
  if (hello.empty()) return {Sniff::tls, ""};  // no extensions at all
  auto ext_length = hello.number(2);
  if (!ext_length) return other();
  std::string_view ext_bytes;
  if (complete) {
    auto all = hello.take(*ext_length);
    if (!all || !hello.empty()) return other();
    ext_bytes = *all;
  } else {
    ext_bytes = hello.rest().substr(0, *ext_length);
  }
  Reader exts(ext_bytes);
  while (!exts.empty()) {
    auto ext_type = exts.number(2);
    auto data = exts.vec(2);
    if (!ext_type || !data) {
      if (complete) return other();
      break;  // cut by the record's end
    }
    if (*ext_type == kExtServerName) return server_name(*data);
  }
  return {Sniff::tls, ""};
}

Sniffed sniff_tls(std::string_view b) {
  if (b.size() >= 2 && b[1] != 3) return other();
  // The length's high byte alone already says whether it is over the limit.
  if (b.size() >= 4 && static_cast<uint8_t>(b[3]) > (kMaxTlsRecord >> 8)) return other();
  if (b.size() < kTlsHeader) return {Sniff::need_more, ""};
  const size_t length = (static_cast<uint8_t>(b[3]) << 8) | static_cast<uint8_t>(b[4]);
  if (length > kMaxTlsRecord) return other();
  if (b.size() < kTlsHeader + length) return {Sniff::need_more, ""};
  return client_hello(b.substr(kTlsHeader, length));
}

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    return lower(x) == lower(y);
  });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The Host value without its port; IPv6 literals lose their brackets.
Sniffed http_host(std::string_view value) {
  std::string_view host = value;
  if (value.starts_with('[')) {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) return other();
    std::string_view after = value.substr(close + 1);
    if (!after.empty() && after.front() != ':') return other();
    host = value.substr(1, close - 1);
  } else {
    host = value.substr(0, value.find(':'));
  }
  auto name = clean_name(host);
  if (!name) return other();
  return {Sniff::http, *name};
}

Sniffed sniff_http(std::string_view b) {
  const std::string_view start = b.substr(0, b.find(' '));
  bool could_be = false;
  for (std::string_view m : kMethods) {
    if (start.size() < b.size() ? start == m : m.starts_with(start)) could_be = true;
  }
  if (!could_be) return other();
  if (start.size() == b.size()) return {Sniff::need_more, ""};

  const std::string_view window = b.substr(0, kMaxSniff);
  const size_t end = std::min(window.find("\r\n\r\n"), window.find("\n\n"));
  if (end == std::string_view::npos) return {window.size() < kMaxSniff ? Sniff::need_more : Sniff::other, ""};

  std::string_view head = b.substr(0, end);
  const size_t request_line_end = head.find('\n');
  head = request_line_end == std::string_view::npos ? std::string_view() : head.substr(request_line_end + 1);
  std::optional<std::string_view> host;
  while (!head.empty()) {
    const size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    head.remove_prefix(nl == std::string_view::npos ? head.size() : nl + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    // Folded or colon-less lines are obsolete or broken: a server may read them differently.
    const size_t colon = line.find(':');
    if (line.starts_with(' ') || line.starts_with('\t') || colon == std::string_view::npos) return other();
    if (!iequals(line.substr(0, colon), "host")) continue;
    if (host) return other();  // two Hosts: which one would the server use?
    host = trim(line.substr(colon + 1));
  }
  if (!host) return {Sniff::http, ""};
  return http_host(*host);
}

}  // namespace

Sniffed sniff(std::string_view first_bytes) {
  if (first_bytes.empty()) return {Sniff::need_more, ""};
  const uint8_t first = static_cast<uint8_t>(first_bytes[0]);
  if (first == kTlsHandshake) return sniff_tls(first_bytes);
  if (first >= 'A' && first <= 'Z') return sniff_http(first_bytes);
  return other();
}

}  // namespace vial::net
