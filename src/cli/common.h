// What the `vial` subcommands share: exit codes, error reporting, accelerator choice.

#pragma once

#include <exception>
#include <string>

#include <nlohmann/json.hpp>

#include "sandbox/run_json.h"
#include "server/daemon_client.h"
#include "vm/accel.h"

namespace vial::cli {

// Exit codes of vial itself (a guest program's own exit code passes through `vial run`).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;       // a vial command failed (doctor found problems...)
inline constexpr int kExitUsage = 2;         // bad arguments or input
inline constexpr int kExitVialError = 125;   // `vial run`: vial failed before or around the program
inline constexpr int kExitInterrupted = 130;  // Ctrl-C / SIGTERM

// Prints "vial: <message>" to stderr (or {"error": {...}} to stdout with json) and returns the
// exit code for the error's kind.
int report_error(const std::exception& error, bool json, int failure_code = kExitVialError);

// Picks KVM or TCG (probing KVM once with the language's image) and prints the one-line
// reason on stderr when it falls back to TCG, unless quiet.
Accel choose_accel(const std::string& language, bool quiet, bool recheck = false);

// Writes all of `data` to fd; a closed pipe drops the rest (the run still completes).
void write_all(int fd, std::string_view data);

// POSTs a run or a session exec to the daemon asking for NDJSON, copies its output to this
// process's stdout and stderr as it arrives (byte-exact: `data` or `data_base64` events), and
// returns the result. An `error` event, or a stream that ends without a result, throws Error.
RunResult stream_run(server::DaemonClient& client, const std::string& target, const nlohmann::json& body);

}  // namespace vial::cli
