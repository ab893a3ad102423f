#include "sandbox/run_json.h"

#include <algorithm>

#include "util/base64.h"
#include "util/error.h"

namespace vial {
namespace {

using nlohmann::json;

[[noreturn]] void bad_field(const std::string& field, const std::string& what) {
  throw Error(ErrorKind::invalid_input, "field '" + field + "': " + what);
}

}  // namespace

void check_known_fields(const json& body, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : body.items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list;
    for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    bad_field(key, "unknown field (known: " + list + ")");
  }
}

std::optional<std::string> string_field(const json& body, const std::string& field) {
  if (!body.contains(field)) return std::nullopt;
  const json& v = body.at(field);
  if (!v.is_string()) bad_field(field, "must be a string");
  return v.get<std::string>();
}

void read_string_array(const json& body, const std::string& field, std::vector<std::string>& out) {
  if (!body.contains(field)) return;
  const json& array = body[field];
  if (!array.is_array()) bad_field(field, "must be an array of strings");
  for (const json& a : array) {
    if (!a.is_string()) bad_field(field, "must be an array of strings");
    out.push_back(a.get<std::string>());
  }
}

void read_string_map(const json& body, const std::string& field, std::map<std::string, std::string>& out) {
  if (!body.contains(field)) return;
  const json& map = body[field];
  if (!map.is_object()) bad_field(field, "must be an object of string values");
  for (const auto& [key, value] : map.items()) {
    if (!value.is_string()) bad_field(field, "value of '" + key + "' must be a string");
    out[key] = value.get<std::string>();
  }
}

bool is_valid_utf8(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto* end = p + bytes.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    // The lead byte gives the length and the range of the first continuation byte (which is
    // what excludes overlong forms, surrogates and code points above U+10FFFF).
    size_t more = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      more = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      more = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      more = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) <= more || p[1] < lo || p[1] > hi) return false;
    for (size_t i = 2; i <= more; ++i) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += more + 1;
  }
  return true;
}

void put_bytes(json& j, const std::string& name, std::string_view bytes) {
  if (is_valid_utf8(bytes)) {
    j[name] = bytes;
  } else {
    j[name + "_base64"] = base64_encode(bytes);
  }
}

std::optional<std::string> get_bytes(const json& j, const std::string& name) {
  const std::string encoded = name + "_base64";
  if (j.contains(name) && j.contains(encoded)) bad_field(name, "give " + name + " or " + encoded + ", not both");
  if (!j.contains(encoded)) return string_field(j, name);
  const std::string text = *string_field(j, encoded);
  try {
    return base64_decode(text);
  } catch (const Error& e) {
    bad_field(encoded, e.what());
  }
}

RunRequest run_request_from_json(const json& body, unsigned default_memory_mib) {
  if (!body.is_object()) throw Error(ErrorKind::invalid_input, "the request body must be a JSON object");
  check_known_fields(body, {"language", "code", "argv", "env", "cwd", "stdin", "stdin_base64", "timeout", "memory_mib"});
  RunRequest r;
  r.memory_mib = default_memory_mib;
  if (!body.contains("language")) bad_field("language", "required (python, javascript or shell)");
  r.language = *string_field(body, "language");
  r.code = string_field(body, "code").value_or("");
  read_string_array(body, "argv", r.argv);
  read_string_map(body, "env", r.env);
  r.cwd = string_field(body, "cwd").value_or("");
  r.stdin_data = get_bytes(body, "stdin");
  if (body.contains("timeout")) {
    const json& t = body["timeout"];
    if (!t.is_number_integer() || t.get<int64_t>() < 1 || t.get<int64_t>() > kMaxRunTimeout.count()) {
      bad_field("timeout", "must be a whole number of seconds between 1 and " + std::to_string(kMaxRunTimeout.count()));
    }
    r.timeout = std::chrono::seconds(t.get<int64_t>());
  }
  if (body.contains("memory_mib")) {
    const json& m = body["memory_mib"];
    if (!m.is_number_unsigned() || m.get<uint64_t>() > 1u << 20) bad_field("memory_mib", "must be a positive number of MiB");
    r.memory_mib = m.get<unsigned>();
  }
  validate(r);
  return r;
}

json run_request_to_json(const RunRequest& r) {
  json j = {{"language", r.language}, {"timeout", r.timeout.count()}, {"memory_mib", r.memory_mib}};
  if (!r.code.empty()) j["code"] = r.code;
  if (!r.argv.empty()) j["argv"] = r.argv;
  if (!r.env.empty()) j["env"] = r.env;
  if (!r.cwd.empty()) j["cwd"] = r.cwd;
  if (r.stdin_data) put_bytes(j, "stdin", *r.stdin_data);
  return j;
}

json run_result_to_json(const RunResult& r, const std::string& accel, bool include_output) {
  json j = {{"exit_code", r.exit_code},
            {"signal", r.signal ? json(*r.signal) : json(nullptr)},
            {"timed_out", r.timed_out},
            {"truncated", r.stdout_truncated || r.stderr_truncated},
            {"stdout_truncated", r.stdout_truncated},
            {"stderr_truncated", r.stderr_truncated},
            {"accel", accel},
            {"source", r.source},
            {"timing",
             {{"acquire_ms", r.timing.acquire_ms},
              {"boot_ms", r.timing.boot_ms},
              {"exec_ms", r.timing.exec_ms},
              {"total_ms", r.timing.total_ms}}}};
  if (r.network) j["network"] = {{"allowed", r.network->allowed}, {"denied", r.network->denied}};
  if (include_output) {
    put_bytes(j, "stdout", r.stdout_data);
    put_bytes(j, "stderr", r.stderr_data);
  }
  return j;
}

RunResult run_result_from_json(const json& j) {
  RunResult r;
  r.stdout_data = get_bytes(j, "stdout").value_or("");
  r.stderr_data = get_bytes(j, "stderr").value_or("");
  r.exit_code = j.value("exit_code", 0);
  if (j.contains("signal") && j["signal"].is_number_integer()) r.signal = j["signal"].get<int>();
  r.timed_out = j.value("timed_out", false);
  r.stdout_truncated = j.value("stdout_truncated", false);
  r.stderr_truncated = j.value("stderr_truncated", false);
  r.source = j.value("source", "");
  if (j.contains("network") && j["network"].is_object()) {
    r.network = NetworkCounts{j["network"].value("allowed", uint64_t{0}), j["network"].value("denied", uint64_t{0})};
  }
  if (j.contains("timing") && j["timing"].is_object()) {
    const json& t = j["timing"];
    r.timing.acquire_ms = t.value("acquire_ms", 0.0);
    r.timing.boot_ms = t.value("boot_ms", 0.0);
    r.timing.exec_ms = t.value("exec_ms", 0.0);
    r.timing.total_ms = t.value("total_ms", 0.0);
  }
  return r;
}

std::string dump_json(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

}  // namespace vial
