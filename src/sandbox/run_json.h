// The JSON form of a run: what `vial run --json` prints and what the HTTP API takes and returns,
// kept in one place so the CLI, the server and the clients agree.
#pragma once

#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "sandbox/runner.h"

namespace vial {

// Readers for the fields of an API request body; each throws Error(invalid_input) naming the
// field. Absent fields give nullopt / leave the output as it is.
void check_known_fields(const nlohmann::json& body, std::initializer_list<std::string_view> known);
std::optional<std::string> string_field(const nlohmann::json& body, const std::string& field);
void read_string_array(const nlohmann::json& body, const std::string& field, std::vector<std::string>& out);
void read_string_map(const nlohmann::json& body, const std::string& field, std::map<std::string, std::string>& out);

// Bytes inside JSON (program output, stdin). A JSON string is Unicode, so bytes that are not
// UTF-8 can't travel as text without loss: valid UTF-8 goes as the text field `name`, anything
// else base64-encoded (RFC 4648, padded) as `name + "_base64"`. put_bytes sets exactly one of
// the two. get_bytes reads either (nullopt when neither is there); both at once, a non-string
// or bad base64 throw Error(invalid_input) naming the field.
void put_bytes(nlohmann::json& j, const std::string& name, std::string_view bytes);
std::optional<std::string> get_bytes(const nlohmann::json& j, const std::string& name);
// Strict UTF-8 (RFC 3629): no overlong forms, surrogates or code points above U+10FFFF.
bool is_valid_utf8(std::string_view bytes);

// Builds a RunRequest from {language, code | argv, env, cwd, stdin | stdin_base64, timeout,
// memory_mib}.
// Unknown fields and wrong types throw Error(invalid_input) naming the field. memory_mib is
// left at `default_memory_mib` when absent.
RunRequest run_request_from_json(const nlohmann::json& body, unsigned default_memory_mib);

// The inverse, for clients of the API (the CLI talking to `vial serve`).
nlohmann::json run_request_to_json(const RunRequest& request);

// {stdout, stderr, exit_code, signal, timed_out, truncated, ..., accel, source, timing}, the
// output through put_bytes (stdout or stdout_base64, stderr or stderr_base64). include_output
// false leaves the output out (it was streamed).
nlohmann::json run_result_to_json(const RunResult& result, const std::string& accel, bool include_output = true);
RunResult run_result_from_json(const nlohmann::json& j);

// JSON dump that never throws on invalid UTF-8 (guest output is arbitrary bytes).
std::string dump_json(const nlohmann::json& j, int indent = -1);

}  // namespace vial
