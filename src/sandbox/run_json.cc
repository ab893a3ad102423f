#include "sandbox/run_json.h"

#include <algorithm>

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

RunRequest run_request_from_json(const json& body, unsigned default_memory_mib) {
  if (!body.is_object()) throw Error(ErrorKind::invalid_input, "the request body must be a JSON object");
  check_known_fields(body, {"language", "code", "argv", "env", "cwd", "stdin", "timeout", "memory_mib"});
  RunRequest r;
  r.memory_mib = default_memory_mib;
  if (!body.contains("language")) bad_field("language", "required (python, javascript or shell)");
  r.language = *string_field(body, "language");
  r.code = string_field(body, "code").value_or("");
  read_string_array(body, "argv", r.argv);
  read_string_map(body, "env", r.env);
  r.cwd = string_field(body, "cwd").value_or("");
  r.stdin_data = string_field(body, "stdin");
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
  if (r.stdin_data) j["stdin"] = *r.stdin_data;
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
    j["stdout"] = r.stdout_data;
    j["stderr"] = r.stderr_data;
  }
  return j;
}

RunResult run_result_from_json(const json& j) {
  RunResult r;
  r.stdout_data = j.value("stdout", "");
  r.stderr_data = j.value("stderr", "");
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
