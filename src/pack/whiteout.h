// Tar entry paths of image layers: normalizing them safely and reading whiteouts (the OCI /
// Docker way a layer deletes what lower layers put there).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace vial::pack {

// "./a//b/" -> "a/b"; "/" or "." -> "" (the root itself). Nothing for a path with a ".."
// component: a layer must never write outside its root.
std::optional<std::string> normalize_entry_path(std::string_view path);

enum class WhiteoutKind {
  none,    // an ordinary entry
  remove,  // "dir/.wh.NAME": delete dir/NAME from lower layers
  opaque,  // "dir/.wh..wh..opq": delete everything lower layers put in dir
};

struct Whiteout {
  WhiteoutKind kind = WhiteoutKind::none;
  std::string target;  // the path to delete (remove) or the directory to empty (opaque)
};

// Classifies a normalized entry path.
Whiteout classify_whiteout(const std::string& normalized_path);

// root/relative if every directory on the way is a real directory (not a symlink), so that
// acting on it cannot touch anything outside root; nothing if a component is missing or a
// symlink. `root` must be canonical.
std::optional<std::filesystem::path> path_inside(const std::filesystem::path& root, const std::string& relative);

// Applies one whiteout to the tree at `root` (canonical). Missing targets are fine (nothing
// to delete).
void apply_whiteout(const std::filesystem::path& root, const Whiteout& whiteout);

}  // namespace vial::pack
