#include "storage/qemu_img.h"

#include <chrono>

#include "util/error.h"
#include "util/process.h"

namespace vial {

void create_overlay_with_qemu_img(const std::string& backing, const std::filesystem::path& target) {
  CaptureResult r = run_capture({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, target.string()},
                                std::chrono::seconds(60));
  if (r.exit_code != 0) {
    throw Error(ErrorKind::unavailable, "qemu-img could not create " + target.string() + ": " + r.output);
  }
}

}  // namespace vial
