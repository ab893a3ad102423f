#include "pack/manifest.h"

#include <ctime>

#include "util/error.h"

namespace vial::pack {
namespace {

using nlohmann::json;

[[noreturn]] void bad_field(const std::string& origin, const std::string& field, const std::string& problem) {
  throw Error(ErrorKind::invalid_input,
              origin + " is not a valid vial pack: manifest field '" + field + "' " + problem);
}

const json& require(const json& object, const std::string& key, json::value_t type, const std::string& origin,
                    const std::string& path) {
  auto it = object.find(key);
  if (it == object.end()) bad_field(origin, path + key, "is missing");
  bool ok = it->type() == type ||
            (type == json::value_t::number_unsigned && it->is_number_integer() && it->get<int64_t>() >= 0);
  if (!ok) bad_field(origin, path + key, std::string("should be a ") + json(type).type_name() + " (found " +
                                             it->type_name() + ")");
  return *it;
}

std::vector<std::string> string_list(const json& object, const std::string& key, const std::string& origin,
                                     const std::string& path) {
  std::vector<std::string> out;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return out;
  if (!it->is_array()) bad_field(origin, path + key, "should be a list of strings");
  for (const auto& item : *it) {
    if (!item.is_string()) bad_field(origin, path + key, "should be a list of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

bool is_hex_sha256(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

const std::vector<std::string>& part_names() {
  static const std::vector<std::string> names = {kKernelPart, kInitramfsPart, kRootfsPart};
  return names;
}

const PackPart* PackManifest::part(const std::string& name) const {
  for (const auto& p : parts) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

json to_json(const PackManifest& m) {
  json parts = json::object();
  for (const auto& p : m.parts) parts[p.name] = {{"size", p.size}, {"sha256", p.sha256}};
  return {
      {"kind", kManifestKind},
      {"format_version", m.format_version},
      {"arch", m.arch},
      {"created_at", m.created_at},
      {"created_by", m.created_by},
      {"source", {{"kind", m.source.kind}, {"ref", m.source.ref}}},
      {"parts", parts},
      {"rootfs_virtual_size", m.rootfs_virtual_size},
      {"defaults",
       {{"entrypoint", m.defaults.entrypoint},
        {"cmd", m.defaults.cmd},
        {"env", m.defaults.env},
        {"workdir", m.defaults.workdir}}},
  };
}

PackManifest manifest_from_json(const json& j, const std::string& origin) {
  using vt = json::value_t;
  if (!j.is_object() || j.value("kind", std::string()) != kManifestKind) {
    throw Error(ErrorKind::invalid_input, origin + " is not a vial pack (its manifest.json is not a vial pack manifest)");
  }
  PackManifest m;
  m.format_version = require(j, "format_version", vt::number_unsigned, origin, "").get<int>();
  if (m.format_version > kFormatVersion) {
    throw Error(ErrorKind::invalid_input,
                origin + " was made by a newer vial (pack format " + std::to_string(m.format_version) +
                    "; this vial " VIAL_VERSION " reads up to format " + std::to_string(kFormatVersion) +
                    "): upgrade vial to use it");
  }
  if (m.format_version < 1) bad_field(origin, "format_version", "must be at least 1");
  m.arch = require(j, "arch", vt::string, origin, "").get<std::string>();
  m.created_at = j.value("created_at", std::string());
  m.created_by = j.value("created_by", std::string());
  if (auto it = j.find("source"); it != j.end() && it->is_object()) {
    m.source.kind = it->value("kind", std::string());
    m.source.ref = it->value("ref", std::string());
  }
  const json& parts = require(j, "parts", vt::object, origin, "");
  for (const auto& name : part_names()) {
    const std::string path = "parts." + name + ".";
    if (!parts.contains(name)) bad_field(origin, "parts." + name, "is missing");
    const json& entry = parts.at(name);
    if (!entry.is_object()) bad_field(origin, "parts." + name, "should be an object");
    PackPart part;
    part.name = name;
    part.size = require(entry, "size", vt::number_unsigned, origin, path).get<uint64_t>();
    part.sha256 = require(entry, "sha256", vt::string, origin, path).get<std::string>();
    if (!is_hex_sha256(part.sha256)) bad_field(origin, path + "sha256", "is not a hex SHA-256 digest");
    m.parts.push_back(std::move(part));
  }
  if (auto it = j.find("rootfs_virtual_size"); it != j.end() && it->is_number_unsigned()) {
    m.rootfs_virtual_size = it->get<uint64_t>();
  }
  if (auto it = j.find("defaults"); it != j.end() && it->is_object()) {
    m.defaults.entrypoint = string_list(*it, "entrypoint", origin, "defaults.");
    m.defaults.cmd = string_list(*it, "cmd", origin, "defaults.");
    m.defaults.env = string_list(*it, "env", origin, "defaults.");
    m.defaults.workdir = it->value("workdir", std::string());
  }
  return m;
}

std::string utc_now_iso8601() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace vial::pack
