#include "util/paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <system_error>
#include <vector>

#include "util/error.h"

namespace fs = std::filesystem;

namespace vial {
namespace {

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : nullptr;
}

}  // namespace

fs::path vial_home() {
  if (const char* v = env_or_null("VIAL_HOME")) return fs::absolute(v);
  if (geteuid() == 0) return "/var/lib/vial";
  if (const char* xdg = env_or_null("XDG_DATA_HOME")) return fs::path(xdg) / "vial";
  if (const char* home = env_or_null("HOME")) return fs::path(home) / ".local/share/vial";
  return fs::temp_directory_path() / ("vial-" + std::to_string(geteuid()));
}

fs::path images_dir() { return vial_home() / "images"; }
fs::path run_dir() { return vial_home() / "run"; }
fs::path overlays_dir() { return vial_home() / "overlays"; }
fs::path cache_dir() { return vial_home() / "cache"; }
fs::path templates_dir() { return vial_home() / "templates"; }

fs::path self_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

fs::path agent_binary() {
  if (const char* v = env_or_null("VIAL_AGENT_BIN")) return v;
  for (const fs::path& p : {self_dir() / "vial-agent", self_dir() / "../lib/vial/vial-agent"}) {
    if (fs::exists(p)) return fs::weakly_canonical(p);
  }
  throw Error(ErrorKind::unavailable,
              "guest agent binary vial-agent not found next to " + self_dir().string() +
                  ": build it with `make build` (or set VIAL_AGENT_BIN)");
}

fs::path image_build_script() {
  std::vector<fs::path> candidates;
  if (const char* v = env_or_null("VIAL_IMAGES_DIR")) candidates.emplace_back(fs::path(v) / "build-image");
  candidates.emplace_back(fs::path(VIAL_SOURCE_DIR) / "images/build-image");
  candidates.emplace_back(self_dir() / "../share/vial/images/build-image");
  for (const auto& p : candidates) {
    if (fs::exists(p)) return fs::weakly_canonical(p);
  }
  throw Error(ErrorKind::unavailable,
              "image build script images/build-image not found (looked in " +
                  candidates.front().parent_path().string() + " and next to the vial binary)");
}

std::string inode_identity(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_dev) + " " + std::to_string(st.st_ino) + " " + std::to_string(st.st_size) + " " +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

std::string file_identity(const fs::path& path) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(path, ec);
  std::string inode = inode_identity(canonical);
  return inode.empty() ? std::string() : canonical.string() + " " + inode;
}

void ensure_private_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error(ErrorKind::unavailable, "cannot create " + dir.string() + ": " + ec.message() +
                                            " (set VIAL_HOME to a writable directory)");
  }
  ::chmod(dir.c_str(), 0700);
}

void replace_file(const fs::path& path, const std::string& content) {
  std::error_code ec;
  const fs::path tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  if (std::ofstream(tmp) << content) fs::rename(tmp, path, ec);
  fs::remove(tmp, ec);
}

}  // namespace vial
