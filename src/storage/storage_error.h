// The one error type of the storage layer (StorageDaemon, pristine overlays, OverlayPool).
#pragma once

#include <string>

#include "util/error.h"

namespace vial {

// A failed storage operation. error_class() is QMP's error class when QEMU refused a command
// ("GenericError", ...), empty when the failure did not come from QMP.
class StorageDaemonError : public Error {
 public:
  explicit StorageDaemonError(const std::string& message, std::string error_class = {},
                              ErrorKind kind = ErrorKind::internal)
      : Error(kind, message), error_class_(std::move(error_class)) {}
  const std::string& error_class() const { return error_class_; }

 private:
  std::string error_class_;
};

}  // namespace vial
