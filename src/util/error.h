// Failures of vial itself (as opposed to what the sandboxed program did, which is data).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace vial {

// Classifies a failure so callers (CLI exit codes, HTTP statuses) can react without parsing text.
enum class ErrorKind {
  invalid_input,  // the caller asked for something malformed; fix the request
  not_found,      // an image, file or machine that does not exist
  conflict,       // the target exists already or is busy (a name taken, a session running code)
  unavailable,    // a host prerequisite is missing (qemu, kernel, permissions)
  boot_failed,    // the guest never became ready
  timeout,        // a deadline of vial's own expired
  capacity,       // no room for another VM (max_concurrent_vms or the memory budget): retry later
  too_large,      // a file or body over a size limit
  cancelled,      // interrupted by the user (Ctrl-C) or shutdown
  internal,       // a bug or an unexpected system error
};

std::string_view to_string(ErrorKind kind);

// IMPORTANT: messages are shown to users as they are: say what went wrong and what to do.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// "<what>: <strerror(errno)>" as an internal Error; for system calls that should not fail.
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace vial
