#include "net/policy.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>

#include "util/error.h"

namespace vial::net {
namespace {

[[noreturn]] void bad(std::string_view flag, std::string_view value, const std::string& problem) {
  throw Error(ErrorKind::invalid_input, std::string(flag) + " '" + std::string(value) + "': " + problem);
}

[[noreturn]] void bad_field(const std::string& field, const std::string& problem) {
  throw Error(ErrorKind::invalid_input, field + ": " + problem);
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Digits only (no sign, no spaces), at most `max`.
std::optional<uint32_t> parse_number(std::string_view s, uint32_t max) {
  if (!all_digits(s) || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  if (v > max) return std::nullopt;
  return static_cast<uint32_t>(v);
}

uint32_t prefix_mask(uint8_t prefix) { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

std::pair<std::string, uint32_t> parse_add_host_as(std::string_view text, std::string_view flag) {
  const auto parts = split(text, ':');
  if (parts.size() != 2) bad(flag, text, "expected NAME:IP (e.g. db.internal:10.0.0.5)");
  if (parse_ipv4(parts[0])) bad(flag, text, "NAME must be a host name, not an address");
  std::string name = normalize_name(parts[0]);
  if (name.empty()) bad(flag, text, "'" + std::string(parts[0]) + "' is not a valid host name");
  auto ip = parse_ipv4(parts[1]);
  if (!ip) {
    bad(flag, text,
        "'" + std::string(parts[1]) + "' is not an IPv4 address (expected NAME:IP, e.g. db.internal:10.0.0.5)");
  }
  return {name, *ip};
}

PortMapping parse_port_as(std::string_view text, std::string_view flag) {
  const auto parts = split(text, ':');
  if (parts.size() != 2 && parts.size() != 3) bad(flag, text, "expected [HOST_IP:]HOST_PORT:GUEST_PORT (e.g. 8080:80)");
  PortMapping m;
  if (parts.size() == 3) {
    auto ip = parse_ipv4(parts[0]);
    if (!ip) bad(flag, text, "HOST_IP '" + std::string(parts[0]) + "' is not an IPv4 address");
    m.host_ip = *ip;
  }
  auto host_port = parse_number(parts[parts.size() - 2], 65535);
  auto guest_port = parse_number(parts[parts.size() - 1], 65535);
  if (!host_port || !guest_port || *host_port == 0 || *guest_port == 0) bad(flag, text, "ports are 1-65535");
  m.host_port = static_cast<uint16_t>(*host_port);
  m.guest_port = static_cast<uint16_t>(*guest_port);
  return m;
}

// One user-given value and the flag or JSON field that gave it, for error messages.
struct Named {
  std::string value;
  std::string flag;
};

struct NamedOptions {
  bool net = false;
  std::vector<Named> allow_hosts, allow_cidrs, add_hosts, ports;
};

NetPolicy build_policy(const NamedOptions& o) {
  NetPolicy p;
  p.enabled = o.net || !o.allow_hosts.empty() || !o.allow_cidrs.empty() || !o.ports.empty();
  for (const Named& n : o.allow_hosts) p.allow_hosts.push_back(parse_host_pattern(n.value, n.flag));
  for (const Named& n : o.allow_cidrs) p.allow_cidrs.push_back(parse_cidr(n.value, n.flag));
  for (const Named& n : o.add_hosts) {
    auto [name, ip] = parse_add_host_as(n.value, n.flag);
    auto [it, inserted] = p.add_hosts.emplace(name, ip);
    if (!inserted && it->second != ip) bad(n.flag, n.value, name + " is already added as " + ipv4_str(it->second));
  }
  std::vector<std::string> port_texts;
  for (const Named& n : o.ports) {
    PortMapping m = parse_port_as(n.value, n.flag);
    for (size_t i = 0; i < p.ports.size(); ++i) {
      const PortMapping& other = p.ports[i];
      // 0.0.0.0 binds every address, so it overlaps any address on the same port.
      bool overlap = other.host_port == m.host_port &&
                     (other.host_ip == m.host_ip || other.host_ip == 0 || m.host_ip == 0);
      if (overlap) {
        bad(n.flag, n.value, "host port " + ipv4_str(m.host_ip) + ":" + std::to_string(m.host_port) +
                                 " is already published by '" + port_texts[i] + "'");
      }
    }
    p.ports.push_back(m);
    port_texts.push_back(n.value);
  }
  return p;
}

std::vector<Named> json_strings(const nlohmann::json& j, const std::string& field) {
  if (!j.is_array()) bad_field(field, "must be a list of strings");
  std::vector<Named> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string item_field = field + "[" + std::to_string(i) + "]";
    if (!j[i].is_string()) bad_field(item_field, "must be a string, got " + j[i].dump());
    out.push_back({j[i].get<std::string>(), item_field});
  }
  return out;
}

std::vector<Named> json_add_hosts(const nlohmann::json& j) {
  if (j.is_array()) return json_strings(j, "network.add_hosts");
  if (!j.is_object()) bad_field("network.add_hosts", "must be an object {\"name\": \"ip\"} or a list of \"name:ip\"");
  std::vector<Named> out;
  for (const auto& [name, ip] : j.items()) {
    const std::string field = "network.add_hosts." + name;
    if (!ip.is_string()) bad_field(field, "must be an IPv4 address string, got " + ip.dump());
    out.push_back({name + ":" + ip.get<std::string>(), field});
  }
  return out;
}

std::string json_port_number(const nlohmann::json& port, const std::string& field, const char* key) {
  auto it = port.find(key);
  if (it == port.end()) bad_field(field + "." + key, "is required");
  if (!it->is_number_integer()) bad_field(field + "." + key, "must be a port number 1-65535, got " + it->dump());
  return it->dump();
}

std::vector<Named> json_ports(const nlohmann::json& j) {
  if (!j.is_array()) {
    bad_field("network.ports", "must be a list of \"HOST_PORT:GUEST_PORT\" or {host_port, guest_port}");
  }
  std::vector<Named> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& item = j[i];
    const std::string field = "network.ports[" + std::to_string(i) + "]";
    if (item.is_string()) {
      out.push_back({item.get<std::string>(), field});
      continue;
    }
    if (!item.is_object()) bad_field(field, "must be a string \"[HOST_IP:]HOST_PORT:GUEST_PORT\" or an object");
    for (const auto& [key, value] : item.items()) {
      if (key != "host_ip" && key != "host_port" && key != "guest_port") {
        bad_field(field + "." + key, "unknown key (known: host_ip, host_port, guest_port)");
      }
    }
    std::string text;
    if (auto ip = item.find("host_ip"); ip != item.end()) {
      if (!ip->is_string()) bad_field(field + ".host_ip", "must be an IPv4 address string, got " + ip->dump());
      text = ip->get<std::string>() + ":";
    }
    // Two statements: the order of the checks (and so which error is reported) is defined.
    text += json_port_number(item, field, "host_port") + ":";
    text += json_port_number(item, field, "guest_port");
    out.push_back({text, field});
  }
  return out;
}

}  // namespace

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  const auto parts = split(text, '.');
  if (parts.size() != 4) return std::nullopt;
  uint32_t ip = 0;
  for (std::string_view part : parts) {
    if (part.size() > 3 || (part.size() > 1 && part[0] == '0')) return std::nullopt;
    auto octet = parse_number(part, 255);
    if (!octet) return std::nullopt;
    ip = (ip << 8) | *octet;
  }
  return ip;
}

std::string ipv4_str(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 0xff) + "." + std::to_string((ip >> 8) & 0xff) +
         "." + std::to_string(ip & 0xff);
}

bool Ipv4Cidr::contains(uint32_t ip) const { return (ip & prefix_mask(prefix)) == addr; }

std::string Ipv4Cidr::str() const { return ipv4_str(addr) + "/" + std::to_string(prefix); }

Ipv4Cidr parse_cidr(std::string_view text, std::string_view flag) {
  const size_t slash = text.find('/');
  auto ip = parse_ipv4(text.substr(0, slash));
  if (!ip) bad(flag, text, "expected an IPv4 address or CIDR like 10.0.0.0/8");
  Ipv4Cidr cidr{*ip, 32};
  if (slash != std::string_view::npos) {
    std::string_view p = text.substr(slash + 1);
    auto prefix = parse_number(p, 32);
    if (!prefix || (p.size() > 1 && p[0] == '0')) bad(flag, text, "the prefix length must be 0-32");
    cidr.prefix = static_cast<uint8_t>(*prefix);
  }
  const uint32_t masked = *ip & prefix_mask(cidr.prefix);
  if (masked != *ip) {
    bad(flag, text, "host bits are set (did you mean " + Ipv4Cidr{masked, cidr.prefix}.str() + "?)");
  }
  return cidr;
}

std::string normalize_name(std::string_view name) {
  if (name.ends_with('.')) name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return {};
  std::string out;
  out.reserve(name.size());
  for (std::string_view label : split(name, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return {};
    for (char c : label) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return {};
      out.push_back(c);
    }
    out.push_back('.');
  }
  out.pop_back();
  return out;
}

bool HostPattern::matches(std::string_view normalized_name) const {
  if (!wildcard) return normalized_name == base;
  return normalized_name.size() > base.size() + 1 && normalized_name.ends_with(base) &&
         normalized_name[normalized_name.size() - base.size() - 1] == '.';
}

HostPattern parse_host_pattern(std::string_view text, std::string_view flag) {
  if (text == "*" || text == "*.") {
    bad(flag, text, "a bare wildcard would allow every name; name the hosts (e.g. *.example.com)");
  }
  HostPattern p;
  std::string_view base = text;
  if (text.starts_with("*.")) {
    p.wildcard = true;
    base = text.substr(2);
  }
  if (base.find('*') != std::string_view::npos) {
    bad(flag, text, "a wildcard must be the whole first label (e.g. *.example.com)");
  }
  if (parse_ipv4(base.ends_with('.') ? base.substr(0, base.size() - 1) : base)) {
    bad(flag, text, "an IP address is not a host name; allow it with --allow-cidr " + std::string(base) + "/32");
  }
  p.base = normalize_name(base);
  if (p.base.empty()) {
    bad(flag, text, "not a valid host name (dot-separated labels of 1-63 letters, digits, '-' or '_')");
  }
  p.text = p.wildcard ? "*." + p.base : p.base;
  return p;
}

std::pair<std::string, uint32_t> parse_add_host(std::string_view text) { return parse_add_host_as(text, "--add-host"); }

std::string PortMapping::str() const {
  return ipv4_str(host_ip) + ":" + std::to_string(host_port) + ":" + std::to_string(guest_port);
}

PortMapping parse_port_mapping(std::string_view text) { return parse_port_as(text, "--port"); }

const HostPattern* NetPolicy::allowed_by(std::string_view normalized_name) const {
  for (const HostPattern& p : allow_hosts) {
    if (p.matches(normalized_name)) return &p;
  }
  return nullptr;
}

const Ipv4Cidr* NetPolicy::cidr_for(uint32_t ip) const {
  for (const Ipv4Cidr& c : allow_cidrs) {
    if (c.contains(ip)) return &c;
  }
  return nullptr;
}

NetPolicy make_policy(const NetOptions& options) {
  NamedOptions o;
  o.net = options.net;
  auto name = [](const std::vector<std::string>& values, const char* flag) {
    std::vector<Named> out;
    for (const std::string& v : values) out.push_back({v, flag});
    return out;
  };
  o.allow_hosts = name(options.allow_hosts, "--allow-host");
  o.allow_cidrs = name(options.allow_cidrs, "--allow-cidr");
  o.add_hosts = name(options.add_hosts, "--add-host");
  o.ports = name(options.ports, "--port");
  return build_policy(o);
}

NetPolicy policy_from_json(const nlohmann::json& j) {
  if (j.is_null()) return {};
  if (!j.is_object()) bad_field("network", "must be an object like {\"enabled\": true}, got " + j.dump());
  NamedOptions o;
  std::optional<bool> enabled;
  for (const auto& [key, value] : j.items()) {
    if (key == "enabled") {
      if (!value.is_boolean()) bad_field("network.enabled", "must be true or false, got " + value.dump());
      enabled = value.get<bool>();
    } else if (key == "allow_hosts") {
      o.allow_hosts = json_strings(value, "network.allow_hosts");
    } else if (key == "allow_cidrs") {
      o.allow_cidrs = json_strings(value, "network.allow_cidrs");
    } else if (key == "add_hosts") {
      o.add_hosts = json_add_hosts(value);
    } else if (key == "ports") {
      o.ports = json_ports(value);
    } else {
      bad_field("network." + key, "unknown key (known: enabled, allow_hosts, allow_cidrs, add_hosts, ports)");
    }
  }
  if (enabled == false && (!o.allow_hosts.empty() || !o.allow_cidrs.empty() || !o.ports.empty())) {
    bad_field("network.enabled", "is false but allow_hosts, allow_cidrs or ports need the network: set it to true");
  }
  o.net = enabled.value_or(false);
  return build_policy(o);
}

nlohmann::json to_json(const NetPolicy& policy) {
  nlohmann::json j = {{"enabled", policy.enabled},
                      {"allow_hosts", nlohmann::json::array()},
                      {"allow_cidrs", nlohmann::json::array()},
                      {"add_hosts", nlohmann::json::object()},
                      {"ports", nlohmann::json::array()}};
  for (const HostPattern& p : policy.allow_hosts) j["allow_hosts"].push_back(p.text);
  for (const Ipv4Cidr& c : policy.allow_cidrs) j["allow_cidrs"].push_back(c.str());
  for (const auto& [name, ip] : policy.add_hosts) j["add_hosts"][name] = ipv4_str(ip);
  for (const PortMapping& m : policy.ports) j["ports"].push_back(m.str());
  return j;
}

std::optional<std::string> blocked_range(uint32_t ip) {
  struct Range {
    Ipv4Cidr cidr;
    const char* name;
  };
  // Broadcast before reserved: 255.255.255.255 is inside 240.0.0.0/4.
  static const Range kRanges[] = {
      {{0x00000000, 8}, "this-network"}, {{0x7f000000, 8}, "loopback"},    {{0x0a000000, 8}, "private"},
      {{0xac100000, 12}, "private"},     {{0xc0a80000, 16}, "private"},    {{0x64400000, 10}, "cgnat"},
      {{0xa9fe0000, 16}, "link-local"},  {{0xe0000000, 4}, "multicast"},   {{0xffffffff, 32}, "broadcast"},
      {{0xf0000000, 4}, "reserved"},
  };
  for (const Range& r : kRanges) {
    if (r.cidr.contains(ip)) return r.name;
  }
  return std::nullopt;
}

std::vector<uint32_t> host_ipv4_addresses() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  std::vector<uint32_t> out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    uint32_t ip = ntohl(reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
    if (std::find(out.begin(), out.end(), ip) == out.end()) out.push_back(ip);
  }
  ::freeifaddrs(list);
  return out;
}

PolicyEngine::PolicyEngine(NetPolicy policy, std::vector<uint32_t> host_addresses)
    : policy_(std::move(policy)), host_addresses_(host_addresses.begin(), host_addresses.end()) {}

Verdict PolicyEngine::resolve(std::string_view normalized_name) const {
  if (normalized_name.empty() || normalize_name(normalized_name) != normalized_name) return {false, "invalid-name"};
  const HostPattern* pattern = policy_.allowed_by(normalized_name);
  if (policy_.has_allowlist() && !pattern) return {false, "not-allowed"};
  if (added_host(normalized_name)) return {true, "add-host"};
  if (pattern) return {true, "allow-host " + pattern->text};
  return {true, "public"};
}

std::optional<uint32_t> PolicyEngine::added_host(std::string_view normalized_name) const {
  auto it = policy_.add_hosts.find(std::string(normalized_name));
  if (it == policy_.add_hosts.end()) return std::nullopt;
  return it->second;
}

std::vector<uint32_t> PolicyEngine::admit_answers(const std::string& normalized_name,
                                                  const std::vector<uint32_t>& addresses,
                                                  std::vector<uint32_t>* dropped) {
  const bool remember = resolve(normalized_name).allowed;
  std::vector<uint32_t> kept;
  for (uint32_t ip : addresses) {
    if (!policy_.cidr_for(ip) && (blocked_range(ip) || host_addresses_.count(ip))) {
      if (dropped) dropped->push_back(ip);
      continue;
    }
    kept.push_back(ip);
    if (remember && resolved_[ip].insert(normalized_name).second) remembered_.emplace_back(ip, normalized_name);
  }
  while (remembered_.size() > kMaxRemembered) {
    auto& [ip, name] = remembered_.front();
    auto it = resolved_.find(ip);
    it->second.erase(name);
    if (it->second.empty()) resolved_.erase(it);
    remembered_.pop_front();
  }
  return kept;
}

Verdict PolicyEngine::connect(uint32_t ip, uint16_t port) const {
  if (port == 53) return {false, "dns-port"};
  if (const Ipv4Cidr* cidr = policy_.cidr_for(ip)) return {true, "allow-cidr " + cidr->str()};
  if (host_addresses_.count(ip)) return {false, "blocked host-address"};
  if (auto range = blocked_range(ip)) return {false, "blocked " + *range};
  if (!policy_.has_allowlist()) return {true, "public"};
  auto it = resolved_.find(ip);
  if (it != resolved_.end()) {
    for (const std::string& name : it->second) {
      if (const HostPattern* pattern = policy_.allowed_by(name)) return {true, "allow-host " + pattern->text};
    }
  }
  return {false, "not-resolved"};
}

Verdict PolicyEngine::name_on_wire(uint32_t ip, std::string_view name, bool tls) const {
  if (!policy_.has_allowlist()) return {true, "public"};
  const Verdict mismatch{false, tls ? "sni-mismatch" : "host-mismatch"};
  const Ipv4Cidr* cidr = policy_.cidr_for(ip);
  if (auto literal = parse_ipv4(name)) {
    if (*literal == ip && cidr) return {true, "allow-cidr " + cidr->str()};
    return mismatch;
  }
  const std::string normalized = normalize_name(name);
  const HostPattern* pattern = normalized.empty() ? nullptr : policy_.allowed_by(normalized);
  if (!pattern) return mismatch;
  if (!cidr && !names_for(ip).count(normalized)) return mismatch;
  return {true, "allow-host " + pattern->text};
}

std::set<std::string> PolicyEngine::names_for(uint32_t ip) const {
  auto it = resolved_.find(ip);
  return it == resolved_.end() ? std::set<std::string>{} : it->second;
}

}  // namespace vial::net
