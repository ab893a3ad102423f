// What a guest's first bytes name: TLS SNI from hand-built and real ClientHellos, HTTP Host,
// and every truncated or malformed variant (which must never read out of bounds).
#include "net/sniff.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vial::net {
namespace {

using namespace std::string_literals;

std::string u8(size_t v) { return std::string(1, static_cast<char>(v)); }
std::string u16(size_t v) { return u8(v >> 8) + u8(v & 0xff); }
std::string u24(size_t v) { return u8(v >> 16) + u16(v & 0xffff); }

std::string ext(uint16_t type, const std::string& data) { return u16(type) + u16(data.size()) + data; }

std::string sni_ext(const std::string& host, const std::string& before = "") {
  const std::string entries = before + u8(0) + u16(host.size()) + host;
  return ext(0, u16(entries.size()) + entries);
}

// A TLS 1.3-style ClientHello handshake message: version, random, session id, two suites,
// null compression, then `extensions`.
std::string client_hello(const std::string& extensions, bool with_extensions = true) {
  std::string body = u16(0x0303) + std::string(32, 'r') + u8(32) + std::string(32, 's') + u16(4) +
                     "\x13\x01\x13\x02"s + u8(1) + u8(0);
  if (with_extensions) body += u16(extensions.size()) + extensions;
  return u8(1) + u24(body.size()) + body;
}

std::string record(const std::string& handshake) { return "\x16\x03\x01"s + u16(handshake.size()) + handshake; }

// Extensions a browser sends around the SNI.
const std::string kBefore = ext(43, "\x04\x03\x04\x03\x03"s) + ext(51, std::string(1200, 'k'));
const std::string kAfter = ext(16, "\x00\x03\x02h2"s) + ext(21, std::string(100, '\0'));

std::string from_hex(std::string_view hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// Python's ssl (OpenSSL 3) ClientHello for server_hostname="files.pythonhosted.org".
const std::string kRealHello = from_hex(
    "1603010200010001fc030357b33ad03f118ca1d6d9316ee5b939d428cc854cdd8554f48b47984f92b30b1e20b4d0bf52ca4b4400"
    "36fd2e6bdc10b2589a3cb7a17dc377990eccb11016069dd90024130213031301c02cc030c02bc02fcca9cca8c024c028c023c027"
    "009f009e006b006700ff0100018f0000001b001900001666696c65732e707974686f6e686f737465642e6f7267000b0004030001"
    "02000a00160014001d0017001e0019001801000101010201030104002300000016000000170000000d002a002804030503060308"
    "0708080809080a080b080408050806040105010601030303010302040205020602002b00050403040303002d0002010100330026"
    "0024001d0020659b61b371a6f6290d70336d30cf5b3a7b9352992643f2f3d98fe73eea9e2517001500d700000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
);

void expect(const Sniffed& s, Sniff kind, const std::string& name = "") {
  EXPECT_EQ(static_cast<int>(s.kind), static_cast<int>(kind));
  EXPECT_EQ(s.name, name);
}

// ---- TLS ----

TEST(Sniff, ReadsSniFromAHandBuiltClientHello) {
  expect(sniff(record(client_hello(kBefore + sni_ext("Example.COM.") + kAfter))), Sniff::tls, "example.com");
  expect(sniff(record(client_hello(sni_ext("pypi.org")))), Sniff::tls, "pypi.org");
  expect(sniff(record(client_hello(sni_ext("10.0.0.7")))), Sniff::tls, "10.0.0.7");
  // Bytes after the record (the guest kept sending) don't matter.
  expect(sniff(record(client_hello(sni_ext("pypi.org"))) + "\x17\x03\x03"s), Sniff::tls, "pypi.org");
}

TEST(Sniff, ReadsSniFromARealClientHello) {
  ASSERT_EQ(kRealHello.size(), 517u);
  expect(sniff(kRealHello), Sniff::tls, "files.pythonhosted.org");
  for (size_t n = 1; n < kRealHello.size(); ++n) expect(sniff(kRealHello.substr(0, n)), Sniff::need_more);
}

TEST(Sniff, ClientHelloWithoutSniHasNoName) {
  expect(sniff(record(client_hello(kBefore + kAfter))), Sniff::tls, "");
  expect(sniff(record(client_hello("", false))), Sniff::tls, "");
  expect(sniff(record(client_hello(""))), Sniff::tls, "");
}

TEST(Sniff, TakesTheHostNameEntryOfTheSniList) {
  const std::string other_type = u8(7) + u16(3) + "abc";
  expect(sniff(record(client_hello(sni_ext("pypi.org", other_type)))), Sniff::tls, "pypi.org");
  // A list with no host_name entry.
  const std::string only_other = ext(0, u16(other_type.size()) + other_type);
  expect(sniff(record(client_hello(only_other))), Sniff::tls, "");
}

TEST(Sniff, WaitsForTheWholeRecord) {
  const std::string full = record(client_hello(kBefore + sni_ext("pypi.org") + kAfter));
  for (size_t n = 0; n < full.size(); ++n) expect(sniff(full.substr(0, n)), Sniff::need_more);
  expect(sniff(full), Sniff::tls, "pypi.org");
}

TEST(Sniff, RejectsBadRecordHeadersEarly) {
  expect(sniff("\x16\x02"s), Sniff::other);              // not TLS 1.x / SSL 3
  expect(sniff("\x16\x03\x01\x41"s), Sniff::other);      // over 16384 by its high byte alone
  expect(sniff("\x16\x03\x01\x40\x01"s), Sniff::other);  // 16385
  expect(sniff("\x16\x03\x01\x40\x00"s), Sniff::need_more);
  expect(sniff("\x16\x03\x01\x00\x00"s), Sniff::other);  // an empty record
  expect(sniff("\x16\x03\x01\x00\x02\x01\x00"s), Sniff::other);
  // A handshake that is not a ClientHello (a ServerHello).
  std::string hello = client_hello(sni_ext("pypi.org"));
  hello[0] = 2;
  expect(sniff(record(hello)), Sniff::other);
  // Not a handshake record at all.
  std::string alert = record(client_hello(sni_ext("pypi.org")));
  alert[0] = 0x15;
  expect(sniff(alert), Sniff::other);
}

TEST(Sniff, MalformedLengthsAreOther) {
  const std::string good = client_hello(sni_ext("pypi.org"));
  const size_t ext_len_at = 4 + 2 + 32 + 33 + 2 + 4 + 2;  // after the compression methods
  auto with = [&](size_t at, const std::string& bytes) {
    std::string h = good;
    h.replace(at, bytes.size(), bytes);
    return sniff(record(h));
  };
  expect(with(4 + 2 + 32, u8(0xff)), Sniff::other);            // session id overruns
  expect(with(4 + 2 + 32 + 33, u16(0xfffe)), Sniff::other);    // cipher suites overrun
  expect(with(ext_len_at, u16(0xffff)), Sniff::other);         // extensions overrun the hello
  expect(with(ext_len_at, u16(3)), Sniff::other);              // extensions end before the hello
  expect(with(ext_len_at + 4, u16(0x00ff)), Sniff::other);     // server_name overruns the extensions
  expect(with(ext_len_at + 6, u16(0x00ff)), Sniff::other);     // its list overruns the extension
  expect(with(ext_len_at + 6, u16(0)), Sniff::other);          // its list ends before the extension
  expect(with(ext_len_at + 9, u16(0x00ff)), Sniff::other);     // the host name overruns the list
  // Trailing garbage inside the handshake after the extensions.
  std::string trailing = good + "x";
  trailing.replace(1, 3, u24(trailing.size() - 4));
  expect(sniff(record(trailing)), Sniff::other);
  // A handshake length past the record, with the record cut inside the fixed fields.
  expect(sniff(record(good.substr(0, 20))), Sniff::other);
}

TEST(Sniff, OddHostNamesAreOther) {
  expect(sniff(record(client_hello(sni_ext("")))), Sniff::other);
  expect(sniff(record(client_hello(sni_ext("a\x01.com")))), Sniff::other);
  expect(sniff(record(client_hello(sni_ext("a b.com")))), Sniff::other);
  expect(sniff(record(client_hello(sni_ext("\xc3\xa4.com")))), Sniff::other);
}

TEST(Sniff, ClientHelloSplitOverRecordsIsReadFromTheFirst) {
  // The handshake claims more than the first record holds: a hello split over records.
  std::string early = client_hello(sni_ext("pypi.org") + kBefore);
  early.replace(1, 3, u24(early.size() - 4 + 1000));
  expect(sniff(record(early)), Sniff::tls, "pypi.org");

  std::string late = client_hello(kBefore + sni_ext("pypi.org"));
  const size_t cut = late.size() - 5;  // inside the server_name extension
  late = late.substr(0, cut);
  late.replace(1, 3, u24(cut - 4 + 1000));
  expect(sniff(record(late)), Sniff::tls, "");
}

TEST(Sniff, SurvivesEverySingleByteMutation) {
  // Under the sanitizers this catches any read out of bounds.
  const std::string base = record(client_hello(ext(43, "\x02\x03\x04"s) + sni_ext("pypi.org") + kAfter));
  for (size_t i = 0; i < base.size(); ++i) {
    for (int v : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
      std::string m = base;
      m[i] = static_cast<char>(v);
      Sniffed s = sniff(m);
      if (s.kind != Sniff::tls) {
        EXPECT_EQ(s.name, "");
      }
      (void)sniff(std::string_view(m).substr(0, i + 1));
    }
  }
}

// ---- HTTP ----

TEST(Sniff, ReadsTheHttpHost) {
  expect(sniff("GET / HTTP/1.1\r\nUser-Agent: x\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n"), Sniff::http,
         "example.com");
  expect(sniff("POST /x HTTP/1.0\r\nhost:pypi.org.\r\n\r\nbody"), Sniff::http, "pypi.org");
  expect(sniff("PUT / HTTP/1.1\r\nHOST: \t a.com \t\r\n\r\n"), Sniff::http, "a.com");
  expect(sniff("HEAD / HTTP/1.1\nHost: a.com\n\n"), Sniff::http, "a.com");
  expect(sniff("GET / HTTP/1.1\r\nHost: 10.0.0.7:80\r\n\r\n"), Sniff::http, "10.0.0.7");
  expect(sniff("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), Sniff::http, "::1");
  expect(sniff("GET / HTTP/1.1\r\nHost: [FE80::1]\r\n\r\n"), Sniff::http, "fe80::1");
  expect(sniff("GET / HTTP/1.1\r\nX-Host: evil.com\r\nHost: a.com\r\n\r\n"), Sniff::http, "a.com");
  expect(sniff("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), Sniff::http, "");
  expect(sniff("GET / HTTP/1.1\r\n\r\n"), Sniff::http, "");
  expect(sniff("GET / HTTP/1.1\r\nHost:\r\n\r\n"), Sniff::http, "");
  for (const char* method : {"GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"}) {
    expect(sniff(std::string(method) + " / HTTP/1.1\r\nHost: a.com\r\n\r\n"), Sniff::http, "a.com");
  }
}

TEST(Sniff, WaitsForTheWholeHead) {
  const std::string head = "CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n";
  for (size_t n = 0; n < head.size(); ++n) expect(sniff(head.substr(0, n)), Sniff::need_more);
  expect(sniff(head), Sniff::http, "a.com");
}

TEST(Sniff, NonHttpBytesAreOtherAtOnce) {
  expect(sniff("\x00"s), Sniff::other);
  expect(sniff("get / HTTP/1.1\r\n\r\n"), Sniff::other);
  expect(sniff("SSH-2.0-OpenSSH_9.2\r\n"), Sniff::other);
  expect(sniff("GEX"), Sniff::other);
  expect(sniff("GETS / HTTP/1.1\r\n\r\n"), Sniff::other);
  expect(sniff("GET\t/"), Sniff::other);
  expect(sniff("P"), Sniff::need_more);
  expect(sniff("PATC"), Sniff::need_more);
  expect(sniff("OPTIONSX"), Sniff::other);
  expect(sniff("\x16"s), Sniff::need_more);
  expect(sniff("\x16\x03"s), Sniff::need_more);
}

TEST(Sniff, MalformedHeadsAreOther) {
  expect(sniff("GET / HTTP/1.1\r\nHost: a.com\r\nHost: evil.com\r\n\r\n"), Sniff::other);
  expect(sniff("GET / HTTP/1.1\r\nHost: a.com\r\nhost: a.com\r\n\r\n"), Sniff::other);
  expect(sniff("GET / HTTP/1.1\r\nX: 1\r\n evil.com\r\n\r\n"), Sniff::other);
  expect(sniff("GET / HTTP/1.1\r\nHost\r\n\r\n"), Sniff::other);
  expect(sniff("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), Sniff::other);
  expect(sniff("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n"), Sniff::other);
  expect(sniff("GET / HTTP/1.1\r\nHost: a\x01.com\r\n\r\n"), Sniff::other);
}

TEST(Sniff, HeadMustEndWithinTheLimit) {
  const std::string start = "GET / HTTP/1.1\r\nX: ";
  std::string filler(kMaxSniff - start.size() - 4, 'a');
  expect(sniff(start + filler + "\r\n\r\n"), Sniff::http, "");
  expect(sniff(start + filler), Sniff::need_more);
  expect(sniff(start + filler + "a\r\n\r\n"), Sniff::other);
  expect(sniff(start + filler + "aaaa"), Sniff::other);
  expect(sniff(start + filler + "aaaa" + std::string(100000, 'a')), Sniff::other);
}

}  // namespace
}  // namespace vial::net
