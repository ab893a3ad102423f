// A VM's network policy (issue 13): what its guest may resolve and connect to. Pure data and
// decisions, no I/O except host_ipv4_addresses(); the gateway (net/gateway.h) applies it.
//
// Rules, in the order they are checked:
// - No network: the guest has no way out at all (the agent never sets up interception).
// - TCP port 53 anywhere is refused: the guest resolves only through vial.
// - An address in an --allow-cidr rule is allowed (the only way into a blocked range).
// - An address in a blocked range (host loopback and own addresses, link-local/metadata,
//   private, CGNAT, multicast, broadcast, 0/8) is refused.
// - With an allowlist (--allow-host): only addresses vial's resolver returned for an allowed
//   name during this VM's life; a TLS SNI or HTTP Host on the wire must name one of those.
// - Without one (--net alone): every other (public) address.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vial::net {

// IPv4 addresses are uint32_t in host byte order (1.2.3.4 == 0x01020304).
std::optional<uint32_t> parse_ipv4(std::string_view text);  // dotted quad only, no leading zeros
std::string ipv4_str(uint32_t ip);

struct Ipv4Cidr {
  uint32_t addr = 0;  // masked to the prefix
  uint8_t prefix = 32;
  bool contains(uint32_t ip) const;
  std::string str() const;  // "10.0.0.0/8"
};

// "a.b.c.d/N" (0..32) or "a.b.c.d" (/32). Host bits set are an error ("10.0.0.1/8": did you
// mean 10.0.0.0/8?). Throws Error(invalid_input) whose message names `flag`.
Ipv4Cidr parse_cidr(std::string_view text, std::string_view flag = "--allow-cidr");

// Lowercase, without one trailing dot. Empty if `name` is not a valid DNS name (labels of
// 1..63 chars of [a-z0-9-_], not starting or ending with '-', total <= 253).
std::string normalize_name(std::string_view name);

// `pypi.org` (exact) or `*.pythonhosted.org` (any name below it, not the apex itself).
struct HostPattern {
  std::string text;    // as normalized: "*.pythonhosted.org" or "pypi.org"
  bool wildcard = false;
  std::string base;    // "pythonhosted.org" or "pypi.org"
  bool matches(std::string_view normalized_name) const;
};
// Throws Error(invalid_input) naming `flag` for a bare `*`, a wildcard anywhere but the whole
// first label, an IP address, or an invalid name.
HostPattern parse_host_pattern(std::string_view text, std::string_view flag = "--allow-host");

// --add-host NAME:IP. Throws Error(invalid_input) naming the flag.
std::pair<std::string, uint32_t> parse_add_host(std::string_view text);

// -p/--port [HOST_IP:]HOST_PORT:GUEST_PORT, TCP. HOST_IP defaults to 127.0.0.1 and must be an
// IPv4 address; ports are 1..65535. Throws Error(invalid_input) naming the flag.
struct PortMapping {
  uint32_t host_ip = 0x7f000001;
  uint16_t host_port = 0;
  uint16_t guest_port = 0;
  std::string str() const;  // "127.0.0.1:8080:80"
};
PortMapping parse_port_mapping(std::string_view text);

// The user's choices, as flags or JSON give them (unvalidated strings).
struct NetOptions {
  bool net = false;
  std::vector<std::string> allow_hosts;
  std::vector<std::string> allow_cidrs;
  std::vector<std::string> add_hosts;  // NAME:IP
  std::vector<std::string> ports;      // [HOST_IP:]HOST_PORT:GUEST_PORT
};

struct NetPolicy {
  // Any of net, allow_hosts, allow_cidrs turns the network on; add_hosts and ports alone don't
  // (ports need a network: make_policy turns it on for them too).
  bool enabled = false;
  std::vector<HostPattern> allow_hosts;
  std::vector<Ipv4Cidr> allow_cidrs;
  std::map<std::string, uint32_t> add_hosts;  // normalized name -> address
  std::vector<PortMapping> ports;

  bool has_allowlist() const { return !allow_hosts.empty(); }
  // The first pattern matching `normalized_name`, or null.
  const HostPattern* allowed_by(std::string_view normalized_name) const;
  // The first --allow-cidr rule containing ip, or null.
  const Ipv4Cidr* cidr_for(uint32_t ip) const;
};

// Validates every field; throws Error(invalid_input) naming the bad flag and value. Duplicate
// host ports are an error.
NetPolicy make_policy(const NetOptions& options);

// The API's `network` object: {"enabled": bool, "allow_hosts": [..], "allow_cidrs": [..],
// "add_hosts": {"name": "ip"} or ["name:ip"], "ports": ["8080:80"] or [{"host_ip", "host_port",
// "guest_port"}]}; every field optional; null or absent = no network. Throws Error(invalid_input)
// for wrong types or values, naming the field ("network.allow_cidrs[1]: ...").
NetPolicy policy_from_json(const nlohmann::json& j);
// The same shape, normalized (add_hosts as an object, ports as "HOST_IP:HOST_PORT:GUEST_PORT").
nlohmann::json to_json(const NetPolicy& policy);

// The built-in blocked range holding ip, by name ("this-network", "loopback", "private",
// "cgnat", "link-local", "multicast", "reserved", "broadcast"), or nullopt for a public address.
std::optional<std::string> blocked_range(uint32_t ip);

// The host's own IPv4 addresses (getifaddrs); empty on error.
std::vector<uint32_t> host_ipv4_addresses();

struct Verdict {
  bool allowed = false;
  // Which rule decided, for the egress log: "allow-host pypi.org", "allow-cidr 10.0.0.0/8",
  // "public", "blocked private", "blocked host-address", "dns-port", "not-allowed",
  // "not-resolved", "sni-mismatch", "host-mismatch".
  std::string rule;
};

// One VM's decisions. Remembers which addresses its resolver returned for which allowed names.
class PolicyEngine {
 public:
  PolicyEngine(NetPolicy policy, std::vector<uint32_t> host_addresses);

  const NetPolicy& policy() const { return policy_; }

  // May the guest resolve `normalized_name`? Without an allowlist every valid name may.
  Verdict resolve(std::string_view normalized_name) const;
  // The fixed answer for an --add-host name.
  std::optional<uint32_t> added_host(std::string_view normalized_name) const;
  // Filters the addresses the host's resolver (or --add-host) returned for an allowed name:
  // drops those the guest could not connect to anyway (blocked range without a CIDR rule:
  // DNS rebinding) and remembers the rest as that name's. `dropped` receives what was dropped.
  std::vector<uint32_t> admit_answers(const std::string& normalized_name, const std::vector<uint32_t>& addresses,
                                      std::vector<uint32_t>* dropped = nullptr);
  // May the guest open TCP to ip:port?
  Verdict connect(uint32_t ip, uint16_t port) const;
  // The name a connection presented (TLS SNI when tls, else the HTTP Host, normalized, port
  // stripped; an IPv4 literal is allowed) on a connection to ip that connect() allowed. Only
  // checked under an allowlist (otherwise always allowed).
  Verdict name_on_wire(uint32_t ip, std::string_view name, bool tls) const;
  // The names that resolved to ip during this VM's life (for the log).
  std::set<std::string> names_for(uint32_t ip) const;

  // How many (address, name) pairs admit_answers remembers; the oldest are forgotten first.
  static constexpr size_t kMaxRemembered = 4096;

 private:
  NetPolicy policy_;
  std::set<uint32_t> host_addresses_;
  std::map<uint32_t, std::set<std::string>> resolved_;
  std::deque<std::pair<uint32_t, std::string>> remembered_;  // resolved_'s pairs, oldest first
};

}  // namespace vial::net
