#include "pack/whiteout.h"

#include <sys/stat.h>

#include <vector>

#include "util/error.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

bool is_real_dir(const fs::path& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::optional<std::string> normalize_entry_path(std::string_view path) {
  std::string out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(i, end - i);
    if (part == "..") return std::nullopt;
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    i = end + 1;
  }
  return out;
}

Whiteout classify_whiteout(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
  std::string_view name = slash == std::string::npos ? std::string_view(path) : std::string_view(path).substr(slash + 1);
  if (name == kOpaqueMarker) return {WhiteoutKind::opaque, dir};
  if (name.size() > kWhiteoutPrefix.size() && name.substr(0, kWhiteoutPrefix.size()) == kWhiteoutPrefix) {
    std::string target(name.substr(kWhiteoutPrefix.size()));
    return {WhiteoutKind::remove, dir.empty() ? target : dir + "/" + target};
  }
  return {};
}

std::optional<fs::path> path_inside(const fs::path& root, const std::string& relative) {
  fs::path p = root;
  fs::path rel(relative);
  for (auto it = rel.begin(); it != rel.end(); ++it) {
    if (*it == "..") return std::nullopt;
    if (!is_real_dir(p)) return std::nullopt;
    p /= *it;
  }
  return p;
}

void apply_whiteout(const fs::path& root, const Whiteout& whiteout) {
  auto target = path_inside(root, whiteout.target);
  if (!target) return;
  std::error_code ec;
  std::vector<fs::path> doomed;
  if (whiteout.kind == WhiteoutKind::remove) {
    if (whiteout.target.empty()) return;  // ".wh." alone names nothing
    doomed.push_back(*target);
  } else if (whiteout.kind == WhiteoutKind::opaque) {
    if (!is_real_dir(*target)) return;
    for (const auto& entry : fs::directory_iterator(*target, ec)) doomed.push_back(entry.path());
  }
  for (const auto& p : doomed) {
    fs::remove_all(p, ec);  // a symlink is removed itself, never followed
    if (ec) throw Error(ErrorKind::internal, "cannot remove " + p.string() + " for a layer's whiteout: " + ec.message());
  }
}

}  // namespace vial::pack
