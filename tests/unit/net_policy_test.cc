// The network policy: flag and JSON parsing with their error messages, name patterns, the
// blocked ranges, and every rule PolicyEngine decides by (including DNS rebinding).
#include "net/policy.h"

#include <algorithm>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "util/error.h"

namespace vial::net {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

uint32_t ip(const char* text) {
  auto v = parse_ipv4(text);
  EXPECT_TRUE(v) << text;
  return v.value_or(0);
}

// The message of the invalid_input Error `f` throws ("" if it throws nothing).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_input) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

// NetOptions by field name, e.g. opts({{"net", {}}, {"allow_hosts", {"pypi.org"}}}).
NetOptions opts(std::initializer_list<std::pair<std::string, std::vector<std::string>>> fields) {
  NetOptions o;
  for (const auto& [field, values] : fields) {
    if (field == "net") {
      o.net = true;
    } else if (field == "allow_hosts") {
      o.allow_hosts = values;
    } else if (field == "allow_cidrs") {
      o.allow_cidrs = values;
    } else if (field == "add_hosts") {
      o.add_hosts = values;
    } else if (field == "ports") {
      o.ports = values;
    } else {
      ADD_FAILURE() << "no NetOptions field " << field;
    }
  }
  return o;
}

NetPolicy policy(const NetOptions& o) { return make_policy(o); }

// ---- addresses and CIDRs ----

TEST(NetPolicy, ParsesDottedQuads) {
  EXPECT_EQ(parse_ipv4("1.2.3.4"), 0x01020304u);
  EXPECT_EQ(parse_ipv4("0.0.0.0"), 0u);
  EXPECT_EQ(parse_ipv4("255.255.255.255"), 0xffffffffu);
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "1.2.3.256", "01.2.3.4", "1.2.3.04", "1..3.4", "1.2.3.",
                          " 1.2.3.4", "1.2.3.4 ", "+1.2.3.4", "-1.2.3.4", "0x1.2.3.4", "1.2.3.4/8", "a.b.c.d",
                          "1.2.3.99999999999"}) {
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
  }
  EXPECT_EQ(ipv4_str(0x0a00ff01), "10.0.255.1");
}

TEST(NetPolicy, ParsesCidrs) {
  Ipv4Cidr c = parse_cidr("10.0.0.0/8");
  EXPECT_EQ(c.addr, 0x0a000000u);
  EXPECT_EQ(c.prefix, 8);
  EXPECT_EQ(c.str(), "10.0.0.0/8");
  EXPECT_TRUE(c.contains(ip("10.255.1.2")));
  EXPECT_FALSE(c.contains(ip("11.0.0.0")));

  Ipv4Cidr host = parse_cidr("192.168.1.7");
  EXPECT_EQ(host.prefix, 32);
  EXPECT_TRUE(host.contains(ip("192.168.1.7")));
  EXPECT_FALSE(host.contains(ip("192.168.1.8")));

  Ipv4Cidr all = parse_cidr("0.0.0.0/0");
  EXPECT_TRUE(all.contains(0));
  EXPECT_TRUE(all.contains(0xffffffff));
}

TEST(NetPolicy, CidrErrorsNameTheFlagAndValue) {
  EXPECT_EQ(error_of([] { parse_cidr("10.0.0.1/8"); }),
            "--allow-cidr '10.0.0.1/8': host bits are set (did you mean 10.0.0.0/8?)");
  EXPECT_EQ(error_of([] { parse_cidr("10.0.0.0/33"); }), "--allow-cidr '10.0.0.0/33': the prefix length must be 0-32");
  EXPECT_THAT(error_of([] { parse_cidr("example.com"); }), HasSubstr("--allow-cidr 'example.com': expected"));
  for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/08", "10.0.0.0/8/8", "10.0.0/8"}) {
    EXPECT_THAT(error_of([&] { parse_cidr(bad); }), HasSubstr("'" + std::string(bad) + "'")) << bad;
  }
  EXPECT_EQ(error_of([] { parse_cidr("1.2.3.5/31", "network.allow_cidrs[1]"); }),
            "network.allow_cidrs[1] '1.2.3.5/31': host bits are set (did you mean 1.2.3.4/31?)");
}

// ---- names and patterns ----

TEST(NetPolicy, NormalizesNames) {
  EXPECT_EQ(normalize_name("PyPI.Org."), "pypi.org");
  EXPECT_EQ(normalize_name("_dmarc.a-b.example"), "_dmarc.a-b.example");
  EXPECT_EQ(normalize_name("localhost"), "localhost");
  for (const char* bad : {"", ".", "a..b", ".a", "a.b..", "-a.com", "a-.com", "a b.com", "a*.com", "*.a.com",
                          "a:80", "ä.com", "a/b"}) {
    EXPECT_EQ(normalize_name(bad), "") << bad;
  }
  const std::string label63(63, 'a');
  EXPECT_EQ(normalize_name(label63 + ".com"), label63 + ".com");
  EXPECT_EQ(normalize_name(std::string(64, 'a') + ".com"), "");
  // 4 labels of 63 + 3 dots = 255 > 253; 253 exactly is fine.
  const std::string at253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
  ASSERT_EQ(at253.size(), 253u);
  EXPECT_EQ(normalize_name(at253), at253);
  EXPECT_EQ(normalize_name(at253 + "."), at253);
  EXPECT_EQ(normalize_name(at253 + "b"), "");
}

TEST(NetPolicy, ExactPatternMatchesOnlyThatName) {
  HostPattern p = parse_host_pattern("PyPI.org");
  EXPECT_FALSE(p.wildcard);
  EXPECT_EQ(p.text, "pypi.org");
  EXPECT_TRUE(p.matches("pypi.org"));
  EXPECT_TRUE(p.matches(normalize_name("PYPI.ORG.")));
  EXPECT_FALSE(p.matches("www.pypi.org"));
  EXPECT_FALSE(p.matches("pypi.org.evil.com"));
  EXPECT_FALSE(p.matches("xpypi.org"));
}

TEST(NetPolicy, WildcardMatchesSubdomainsButNotTheApex) {
  HostPattern p = parse_host_pattern("*.PythonHosted.org.");
  EXPECT_TRUE(p.wildcard);
  EXPECT_EQ(p.text, "*.pythonhosted.org");
  EXPECT_EQ(p.base, "pythonhosted.org");
  EXPECT_TRUE(p.matches("files.pythonhosted.org"));
  EXPECT_TRUE(p.matches("a.b.pythonhosted.org"));
  EXPECT_TRUE(p.matches(normalize_name("FILES.PythonHosted.ORG")));
  EXPECT_FALSE(p.matches("pythonhosted.org"));
  EXPECT_FALSE(p.matches("evilpythonhosted.org"));
  EXPECT_FALSE(p.matches(".pythonhosted.org"));
  EXPECT_FALSE(p.matches("pythonhosted.org.evil.com"));
}

TEST(NetPolicy, BadPatternsAreRefused) {
  EXPECT_EQ(error_of([] { parse_host_pattern("*"); }),
            "--allow-host '*': a bare wildcard would allow every name; name the hosts (e.g. *.example.com)");
  EXPECT_THAT(error_of([] { parse_host_pattern("*."); }), HasSubstr("bare wildcard"));
  for (const char* bad : {"a.*.com", "*foo.com", "foo*.com", "*.*.com", "**.com", "foo.*"}) {
    EXPECT_THAT(error_of([&] { parse_host_pattern(bad); }),
                HasSubstr("'" + std::string(bad) + "': a wildcard must be the whole first label"))
        << bad;
  }
  EXPECT_THAT(error_of([] { parse_host_pattern("1.2.3.4"); }), HasSubstr("--allow-cidr 1.2.3.4/32"));
  for (const char* bad : {"", "exa mple.com", "-a.com", "a..com", "https://a.com"}) {
    EXPECT_THAT(error_of([&] { parse_host_pattern(bad); }), HasSubstr("not a valid host name")) << bad;
  }
  EXPECT_THAT(error_of([] { parse_host_pattern("*", "network.allow_hosts[0]"); }),
              HasSubstr("network.allow_hosts[0] '*'"));
}

// ---- --add-host and --port ----

TEST(NetPolicy, ParsesAddHost) {
  auto [name, addr] = parse_add_host("DB.Internal:10.0.0.5");
  EXPECT_EQ(name, "db.internal");
  EXPECT_EQ(addr, ip("10.0.0.5"));
  for (const char* bad : {"db", "db:", ":10.0.0.5", "db:10.0.0", "db:10.0.0.5:1", "db:host", "bad name:1.2.3.4",
                          "*.db:1.2.3.4", ""}) {
    EXPECT_THAT(error_of([&] { parse_add_host(bad); }), HasSubstr("--add-host '" + std::string(bad) + "'")) << bad;
  }
  EXPECT_THAT(error_of([] { parse_add_host("1.2.3.4:5.6.7.8"); }), HasSubstr("not an address"));
  EXPECT_THAT(error_of([] { parse_add_host("db:nope"); }), HasSubstr("'nope' is not an IPv4 address"));
}

TEST(NetPolicy, ParsesPortMappings) {
  PortMapping m = parse_port_mapping("8080:80");
  EXPECT_EQ(m.host_ip, 0x7f000001u);
  EXPECT_EQ(m.host_port, 8080);
  EXPECT_EQ(m.guest_port, 80);
  EXPECT_EQ(m.str(), "127.0.0.1:8080:80");
  EXPECT_EQ(parse_port_mapping("0.0.0.0:1:65535").str(), "0.0.0.0:1:65535");

  EXPECT_EQ(error_of([] { parse_port_mapping("0:80"); }), "--port '0:80': ports are 1-65535");
  EXPECT_EQ(error_of([] { parse_port_mapping("80:65536"); }), "--port '80:65536': ports are 1-65535");
  for (const char* bad : {"80:0", "-1:80", "+80:80", "80:", ":80", "8o:80", "99999999999:80"}) {
    EXPECT_THAT(error_of([&] { parse_port_mapping(bad); }), HasSubstr("ports are 1-65535")) << bad;
  }
  for (const char* bad : {"80", "", "1.2.3.4:1:2:3"}) {
    EXPECT_THAT(error_of([&] { parse_port_mapping(bad); }), HasSubstr("expected [HOST_IP:]HOST_PORT:GUEST_PORT"))
        << bad;
  }
  EXPECT_THAT(error_of([] { parse_port_mapping("localhost:80:80"); }),
              HasSubstr("HOST_IP 'localhost' is not an IPv4 address"));
}

// ---- make_policy ----

TEST(NetPolicy, WhatTurnsTheNetworkOn) {
  EXPECT_FALSE(policy({}).enabled);
  EXPECT_TRUE(policy(opts({{"net", {}}})).enabled);
  EXPECT_TRUE(policy(opts({{"allow_hosts", {"pypi.org"}}})).enabled);
  EXPECT_TRUE(policy(opts({{"allow_cidrs", {"10.0.0.0/8"}}})).enabled);
  EXPECT_TRUE(policy(opts({{"ports", {"8080:80"}}})).enabled);
  EXPECT_FALSE(policy(opts({{"add_hosts", {"db:10.0.0.5"}}})).enabled);
}

TEST(NetPolicy, MakePolicyValidatesEveryField) {
  NetPolicy p = policy(opts({{"net", {}},
                             {"allow_hosts", {"PyPI.org", "*.pythonhosted.org"}},
                             {"allow_cidrs", {"10.1.0.0/16"}},
                             {"add_hosts", {"db:10.1.0.5", "DB:10.1.0.5"}},
                             {"ports", {"8080:80", "127.0.0.2:8080:81"}}}));
  ASSERT_EQ(p.allow_hosts.size(), 2u);
  EXPECT_EQ(p.allow_hosts[0].text, "pypi.org");
  EXPECT_TRUE(p.has_allowlist());
  ASSERT_EQ(p.allow_cidrs.size(), 1u);
  EXPECT_EQ(p.add_hosts, (std::map<std::string, uint32_t>{{"db", ip("10.1.0.5")}}));
  EXPECT_EQ(p.ports.size(), 2u);
  EXPECT_EQ(p.allowed_by("files.pythonhosted.org"), &p.allow_hosts[1]);
  EXPECT_EQ(p.allowed_by("example.com"), nullptr);
  EXPECT_EQ(p.cidr_for(ip("10.1.2.3")), &p.allow_cidrs[0]);
  EXPECT_EQ(p.cidr_for(ip("10.2.0.0")), nullptr);

  EXPECT_THAT(error_of([] { policy(opts({{"allow_hosts", {"ok.com", "*"}}})); }), HasSubstr("--allow-host '*'"));
  EXPECT_THAT(error_of([] { policy(opts({{"allow_cidrs", {"10.0.0.1/8"}}})); }),
              HasSubstr("--allow-cidr '10.0.0.1/8'"));
  EXPECT_THAT(error_of([] { policy(opts({{"add_hosts", {"db"}}})); }), HasSubstr("--add-host 'db'"));
  EXPECT_THAT(error_of([] { policy(opts({{"add_hosts", {"db:10.0.0.5", "db:10.0.0.6"}}})); }),
              HasSubstr("--add-host 'db:10.0.0.6': db is already added as 10.0.0.5"));
  EXPECT_THAT(error_of([] { policy(opts({{"ports", {"65536:80"}}})); }), HasSubstr("--port '65536:80'"));
}

TEST(NetPolicy, DuplicateHostPortsAreRefused) {
  EXPECT_EQ(error_of([] { policy(opts({{"ports", {"8080:80", "8080:81"}}})); }),
            "--port '8080:81': host port 127.0.0.1:8080 is already published by '8080:80'");
  EXPECT_THAT(error_of([] { policy(opts({{"ports", {"0.0.0.0:8080:80", "127.0.0.1:8080:81"}}})); }),
              HasSubstr("already published by '0.0.0.0:8080:80'"));
  EXPECT_THAT(error_of([] { policy(opts({{"ports", {"127.0.0.1:8080:80", "0.0.0.0:8080:81"}}})); }),
              HasSubstr("already published"));
  // Different addresses, same port: two separate sockets.
  EXPECT_EQ(policy(opts({{"ports", {"127.0.0.1:8080:80", "127.0.0.2:8080:80", "8081:80"}}})).ports.size(), 3u);
}

// ---- JSON ----

TEST(NetPolicy, JsonAbsentOrNullMeansNoNetwork) {
  EXPECT_FALSE(policy_from_json(json()).enabled);
  EXPECT_FALSE(policy_from_json(json::object()).enabled);
  EXPECT_FALSE(policy_from_json({{"enabled", false}}).enabled);
  EXPECT_TRUE(policy_from_json({{"enabled", true}}).enabled);
  EXPECT_TRUE(policy_from_json({{"allow_hosts", {"pypi.org"}}}).enabled);
}

TEST(NetPolicy, JsonRoundTripsNormalized) {
  json in = {{"enabled", true},
             {"allow_hosts", {"PyPI.org", "*.pythonhosted.org"}},
             {"allow_cidrs", {"10.0.0.0/8"}},
             {"add_hosts", {{"DB", "10.0.0.5"}}},
             {"ports", json::array({"8080:80", {{"host_ip", "0.0.0.0"}, {"host_port", 9000}, {"guest_port", 90}},
                                    {{"host_port", 9001}, {"guest_port", 91}}})}};
  json out = to_json(policy_from_json(in));
  json expected = {{"enabled", true},
                   {"allow_hosts", {"pypi.org", "*.pythonhosted.org"}},
                   {"allow_cidrs", {"10.0.0.0/8"}},
                   {"add_hosts", {{"db", "10.0.0.5"}}},
                   {"ports", {"127.0.0.1:8080:80", "0.0.0.0:9000:90", "127.0.0.1:9001:91"}}};
  EXPECT_EQ(out, expected);
  EXPECT_EQ(to_json(policy_from_json(out)), expected);

  json list_form = {{"add_hosts", {"db:10.0.0.5"}}};
  EXPECT_EQ(policy_from_json(list_form).add_hosts.at("db"), ip("10.0.0.5"));
  EXPECT_EQ(to_json(NetPolicy{}),
            json({{"enabled", false},
                  {"allow_hosts", json::array()},
                  {"allow_cidrs", json::array()},
                  {"add_hosts", json::object()},
                  {"ports", json::array()}}));
}

TEST(NetPolicy, JsonErrorsNameTheField) {
  EXPECT_EQ(error_of([] { policy_from_json({{"allow_cidrs", {"10.0.0.0/8", "10.0.0.1/8"}}}); }),
            "network.allow_cidrs[1] '10.0.0.1/8': host bits are set (did you mean 10.0.0.0/8?)");
  EXPECT_EQ(error_of([] { policy_from_json({{"allow_hosts", {"ok.com", 5}}}); }),
            "network.allow_hosts[1]: must be a string, got 5");
  EXPECT_THAT(error_of([] { policy_from_json({{"allow_hosts", "pypi.org"}}); }),
              HasSubstr("network.allow_hosts: must be a list"));
  EXPECT_THAT(error_of([] { policy_from_json({{"allow_hosts", {"*"}}}); }),
              HasSubstr("network.allow_hosts[0] '*': a bare wildcard"));
  EXPECT_THAT(error_of([] { policy_from_json({{"enabled", "yes"}}); }), HasSubstr("network.enabled: must be true"));
  EXPECT_THAT(error_of([] { policy_from_json({{"enabled", false}, {"allow_hosts", {"a.com"}}}); }),
              HasSubstr("network.enabled"));
  EXPECT_THAT(error_of([] { policy_from_json({{"allowed_hosts", {"a.com"}}}); }),
              HasSubstr("network.allowed_hosts: unknown key"));
  EXPECT_THAT(error_of([] { policy_from_json(json::array()); }), HasSubstr("network: must be an object"));
  EXPECT_THAT(error_of([] { policy_from_json(true); }), HasSubstr("network: must be an object"));

  EXPECT_THAT(error_of([] { policy_from_json({{"add_hosts", {{"db", 5}}}}); }),
              HasSubstr("network.add_hosts.db: must be an IPv4 address string"));
  EXPECT_THAT(error_of([] { policy_from_json({{"add_hosts", {{"db", "nope"}}}}); }),
              HasSubstr("network.add_hosts.db 'db:nope'"));
  EXPECT_THAT(error_of([] { policy_from_json({{"add_hosts", {"db"}}}); }), HasSubstr("network.add_hosts[0] 'db'"));
  EXPECT_THAT(error_of([] { policy_from_json({{"add_hosts", 1}}); }), HasSubstr("network.add_hosts: must be"));

  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {"8080:80", "0:80"}}}); }),
              HasSubstr("network.ports[1] '0:80': ports are 1-65535"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {{{"host_port", 80}}}}}); }),
              HasSubstr("network.ports[0].guest_port: is required"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {{{"host_port", "80"}, {"guest_port", 80}}}}}); }),
              HasSubstr("network.ports[0].host_port: must be a port number"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {{{"host_port", 65536}, {"guest_port", 80}}}}}); }),
              HasSubstr("ports are 1-65535"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {{{"host_port", -1}, {"guest_port", 80}}}}}); }),
              HasSubstr("ports are 1-65535"));
  const json with_proto = {{"ports", {{{"host_port", 1}, {"guest_port", 2}, {"proto", "udp"}}}}};
  EXPECT_THAT(error_of([&] { policy_from_json(with_proto); }), HasSubstr("network.ports[0].proto: unknown key"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {{{"host_ip", 1}, {"host_port", 1}, {"guest_port", 2}}}}}); }),
              HasSubstr("network.ports[0].host_ip: must be"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {"8080:80", {{"host_port", 8080}, {"guest_port", 2}}}}}); }),
              HasSubstr("network.ports[1] '8080:2': host port 127.0.0.1:8080 is already published"));
  EXPECT_THAT(error_of([] { policy_from_json({{"ports", {1}}}); }), HasSubstr("network.ports[0]: must be"));
}

// ---- blocked ranges ----

TEST(NetPolicy, BlockedRanges) {
  const std::pair<const char*, const char*> cases[] = {
      {"0.0.0.0", "this-network"},     {"0.255.255.255", "this-network"}, {"127.0.0.1", "loopback"},
      {"127.255.255.255", "loopback"}, {"10.0.0.0", "private"},           {"10.255.255.255", "private"},
      {"172.16.0.0", "private"},       {"172.31.255.255", "private"},     {"192.168.0.1", "private"},
      {"100.64.0.0", "cgnat"},         {"100.127.255.255", "cgnat"},      {"169.254.169.254", "link-local"},
      {"224.0.0.1", "multicast"},      {"239.255.255.255", "multicast"},  {"240.0.0.1", "reserved"},
      {"255.255.255.254", "reserved"}, {"255.255.255.255", "broadcast"},
  };
  for (auto [addr, range] : cases) EXPECT_EQ(blocked_range(ip(addr)), range) << addr;
  for (const char* pub : {"1.0.0.0", "8.8.8.8", "9.255.255.255", "11.0.0.0", "126.255.255.255", "128.0.0.0",
                          "172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0", "100.63.255.255",
                          "100.128.0.0", "169.253.255.255", "169.255.0.0", "223.255.255.255"}) {
    EXPECT_EQ(blocked_range(ip(pub)), std::nullopt) << pub;
  }
}

TEST(NetPolicy, HostAddressesIncludeLoopback) {
  auto addrs = host_ipv4_addresses();
  EXPECT_NE(std::find(addrs.begin(), addrs.end(), ip("127.0.0.1")), addrs.end());
}

// ---- PolicyEngine ----

const uint32_t kHostAddr = 0xc0000202;  // 192.0.2.2: public, but the host's own

PolicyEngine engine(NetOptions o) { return PolicyEngine(make_policy(o), {kHostAddr}); }

TEST(NetPolicy, ResolveRules) {
  PolicyEngine open = engine(opts({{"net", {}}, {"add_hosts", {"db:10.0.0.5"}}}));
  EXPECT_EQ(open.resolve("example.com").rule, "public");
  EXPECT_TRUE(open.resolve("example.com").allowed);
  EXPECT_EQ(open.resolve("db").rule, "add-host");
  EXPECT_EQ(open.added_host("db"), ip("10.0.0.5"));
  EXPECT_EQ(open.added_host("example.com"), std::nullopt);
  for (const char* bad : {"", "Example.com", "example.com.", "a..b", "a b"}) {
    Verdict v = open.resolve(bad);
    EXPECT_FALSE(v.allowed) << bad;
    EXPECT_EQ(v.rule, "invalid-name") << bad;
  }

  PolicyEngine listed =
      engine(opts({{"allow_hosts", {"pypi.org", "*.pythonhosted.org", "db"}},
                   {"add_hosts", {"db:10.0.0.5", "other:10.0.0.6"}}}));
  EXPECT_EQ(listed.resolve("pypi.org").rule, "allow-host pypi.org");
  EXPECT_TRUE(listed.resolve("pypi.org").allowed);
  EXPECT_EQ(listed.resolve("files.pythonhosted.org").rule, "allow-host *.pythonhosted.org");
  EXPECT_EQ(listed.resolve("pythonhosted.org").rule, "not-allowed");
  EXPECT_FALSE(listed.resolve("example.com").allowed);
  EXPECT_EQ(listed.resolve("db").rule, "add-host");
  // An --add-host name outside the allowlist stays unresolvable.
  EXPECT_FALSE(listed.resolve("other").allowed);
  EXPECT_EQ(listed.resolve("other").rule, "not-allowed");
}

TEST(NetPolicy, ConnectRulesWithoutAllowlist) {
  PolicyEngine e = engine(opts({{"net", {}}, {"allow_cidrs", {"10.1.0.0/16"}}}));
  auto check = [&](const char* addr, uint16_t port, bool allowed, const std::string& rule) {
    Verdict v = e.connect(ip(addr), port);
    EXPECT_EQ(v.allowed, allowed) << addr << ":" << port;
    EXPECT_EQ(v.rule, rule) << addr << ":" << port;
  };
  check("8.8.8.8", 443, true, "public");
  check("8.8.8.8", 53, false, "dns-port");
  check("10.1.0.53", 53, false, "dns-port");  // even under a CIDR rule
  check("10.1.2.3", 5432, true, "allow-cidr 10.1.0.0/16");
  check("10.2.0.1", 80, false, "blocked private");
  check("127.0.0.1", 80, false, "blocked loopback");
  check("169.254.169.254", 80, false, "blocked link-local");
  check("100.100.0.1", 80, false, "blocked cgnat");
  check("0.0.0.0", 80, false, "blocked this-network");
  check("224.0.0.1", 80, false, "blocked multicast");
  check("255.255.255.255", 80, false, "blocked broadcast");
  check("250.0.0.1", 80, false, "blocked reserved");
  check("192.0.2.2", 80, false, "blocked host-address");
}

TEST(NetPolicy, CidrRuleOpensHostAddressAndBlockedRanges) {
  PolicyEngine e = engine(opts({{"allow_cidrs", {"192.0.2.2/32", "127.0.0.0/8"}}}));
  EXPECT_EQ(e.connect(kHostAddr, 80).rule, "allow-cidr 192.0.2.2/32");
  EXPECT_EQ(e.connect(ip("127.0.0.1"), 80).rule, "allow-cidr 127.0.0.0/8");
}

TEST(NetPolicy, AllowlistOnlyConnectsToResolvedAddresses) {
  PolicyEngine e = engine(opts({{"allow_hosts", {"*.pythonhosted.org", "pypi.org"}}}));
  EXPECT_EQ(e.connect(ip("151.101.0.223"), 443).rule, "not-resolved");
  EXPECT_FALSE(e.connect(ip("151.101.0.223"), 443).allowed);

  auto kept = e.admit_answers("pypi.org", {ip("151.101.0.223"), ip("151.101.64.223")});
  EXPECT_EQ(kept.size(), 2u);
  Verdict v = e.connect(ip("151.101.0.223"), 443);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.rule, "allow-host pypi.org");
  EXPECT_EQ(e.names_for(ip("151.101.0.223")), (std::set<std::string>{"pypi.org"}));
  EXPECT_TRUE(e.names_for(ip("1.1.1.1")).empty());

  e.admit_answers("files.pythonhosted.org", {ip("151.101.0.223")});
  EXPECT_EQ(e.names_for(ip("151.101.0.223")), (std::set<std::string>{"files.pythonhosted.org", "pypi.org"}));
  EXPECT_EQ(e.connect(ip("151.101.0.223"), 443).rule, "allow-host *.pythonhosted.org");

  // A name outside the allowlist is not remembered, so its addresses stay closed.
  e.admit_answers("evil.com", {ip("6.6.6.6")});
  EXPECT_EQ(e.connect(ip("6.6.6.6"), 443).rule, "not-resolved");
  EXPECT_TRUE(e.names_for(ip("6.6.6.6")).empty());
  // Blocked ranges still win over a resolved address.
  EXPECT_EQ(e.connect(ip("151.101.0.223"), 53).rule, "dns-port");
}

TEST(NetPolicy, AdmitAnswersDropsRebindingAddresses) {
  PolicyEngine e = engine(opts({{"allow_hosts", {"pypi.org"}}}));
  std::vector<uint32_t> dropped;
  auto kept = e.admit_answers("pypi.org", {ip("10.0.0.5"), ip("151.101.0.223"), ip("127.0.0.1"), kHostAddr}, &dropped);
  EXPECT_EQ(kept, (std::vector<uint32_t>{ip("151.101.0.223")}));
  EXPECT_EQ(dropped, (std::vector<uint32_t>{ip("10.0.0.5"), ip("127.0.0.1"), kHostAddr}));
  EXPECT_EQ(e.connect(ip("10.0.0.5"), 443).rule, "blocked private");
  EXPECT_TRUE(e.names_for(ip("10.0.0.5")).empty());

  // Unless a CIDR rule opens the range.
  PolicyEngine opened = engine(opts({{"allow_hosts", {"pypi.org"}}, {"allow_cidrs", {"10.0.0.0/24"}}}));
  dropped.clear();
  kept = opened.admit_answers("pypi.org", {ip("10.0.0.5"), ip("10.0.1.5")}, &dropped);
  EXPECT_EQ(kept, (std::vector<uint32_t>{ip("10.0.0.5")}));
  EXPECT_EQ(dropped, (std::vector<uint32_t>{ip("10.0.1.5")}));
  EXPECT_EQ(opened.names_for(ip("10.0.0.5")), (std::set<std::string>{"pypi.org"}));

  // Also without an allowlist (the guest could not connect there anyway), and with no `dropped`.
  PolicyEngine open = engine(opts({{"net", {}}}));
  EXPECT_EQ(open.admit_answers("example.com", {ip("192.168.1.1"), ip("93.184.216.34")}),
            (std::vector<uint32_t>{ip("93.184.216.34")}));
  EXPECT_EQ(open.names_for(ip("93.184.216.34")), (std::set<std::string>{"example.com"}));
}

TEST(NetPolicy, RememberedAddressesAreBounded) {
  PolicyEngine e = engine(opts({{"allow_hosts", {"*.example.com"}}}));
  const uint32_t base = ip("20.0.0.0");
  e.admit_answers("first.example.com", {base});
  for (uint32_t i = 1; i <= PolicyEngine::kMaxRemembered; ++i) {
    e.admit_answers("n" + std::to_string(i % 7) + ".example.com", {base + i});
  }
  EXPECT_EQ(e.connect(base, 443).rule, "not-resolved");  // the oldest was forgotten
  EXPECT_TRUE(e.names_for(base).empty());
  EXPECT_TRUE(e.connect(base + 1, 443).allowed);
  EXPECT_TRUE(e.connect(base + PolicyEngine::kMaxRemembered, 443).allowed);

  // Many names for one address are bounded the same way.
  PolicyEngine one = engine(opts({{"allow_hosts", {"*.example.com"}}}));
  for (size_t i = 0; i < PolicyEngine::kMaxRemembered + 10; ++i) {
    one.admit_answers("n" + std::to_string(i) + ".example.com", {base});
  }
  EXPECT_EQ(one.names_for(base).size(), PolicyEngine::kMaxRemembered);
  EXPECT_FALSE(one.names_for(base).count("n0.example.com"));
  EXPECT_TRUE(one.names_for(base).count("n10.example.com"));
}

TEST(NetPolicy, NameOnWireWithoutAllowlistIsAlwaysAllowed) {
  PolicyEngine e = engine(opts({{"net", {}}}));
  EXPECT_EQ(e.name_on_wire(ip("8.8.8.8"), "anything.example", true).rule, "public");
  EXPECT_TRUE(e.name_on_wire(ip("8.8.8.8"), "", false).allowed);
}

TEST(NetPolicy, NameOnWireMustBeAResolvedAllowedName) {
  PolicyEngine e = engine(opts({{"allow_hosts", {"pypi.org", "*.pythonhosted.org"}}, {"allow_cidrs", {"10.0.0.0/8"}}}));
  const uint32_t pypi = ip("151.101.0.223");
  e.admit_answers("pypi.org", {pypi});

  Verdict v = e.name_on_wire(pypi, "pypi.org", true);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.rule, "allow-host pypi.org");
  EXPECT_TRUE(e.name_on_wire(pypi, "PyPI.org.", false).allowed);

  // Domain fronting: an allowed address, but the wire names something else.
  EXPECT_EQ(e.name_on_wire(pypi, "evil.com", true).rule, "sni-mismatch");
  EXPECT_EQ(e.name_on_wire(pypi, "evil.com", false).rule, "host-mismatch");
  EXPECT_FALSE(e.name_on_wire(pypi, "evil.com", false).allowed);
  // Allowed by a pattern but never resolved to this address.
  EXPECT_EQ(e.name_on_wire(pypi, "files.pythonhosted.org", true).rule, "sni-mismatch");
  EXPECT_EQ(e.name_on_wire(pypi, "", true).rule, "sni-mismatch");
  EXPECT_EQ(e.name_on_wire(pypi, "bad name", false).rule, "host-mismatch");

  // Under a CIDR rule an allowed name need not have resolved there.
  EXPECT_EQ(e.name_on_wire(ip("10.0.0.7"), "files.pythonhosted.org", true).rule, "allow-host *.pythonhosted.org");
  EXPECT_EQ(e.name_on_wire(ip("10.0.0.7"), "evil.com", true).rule, "sni-mismatch");

  // An IPv4 literal: only the connection's own address, and only under a CIDR rule.
  EXPECT_EQ(e.name_on_wire(ip("10.0.0.7"), "10.0.0.7", false).rule, "allow-cidr 10.0.0.0/8");
  EXPECT_EQ(e.name_on_wire(ip("10.0.0.7"), "10.0.0.8", false).rule, "host-mismatch");
  EXPECT_EQ(e.name_on_wire(pypi, "151.101.0.223", true).rule, "sni-mismatch");
}

}  // namespace
}  // namespace vial::net
