// Where vial keeps its files and finds its helper programs.
#pragma once

#include <filesystem>
#include <string>

namespace vial {

// $VIAL_HOME, else /var/lib/vial for root, else $XDG_DATA_HOME/vial or ~/.local/share/vial.
std::filesystem::path vial_home();
std::filesystem::path images_dir();    // vial_home()/images
std::filesystem::path run_dir();       // vial_home()/run: one folder per live VM
std::filesystem::path overlays_dir();  // vial_home()/overlays
std::filesystem::path cache_dir();     // vial_home()/cache
std::filesystem::path templates_dir(); // vial_home()/templates

// The directory holding the running `vial` binary.
std::filesystem::path self_dir();

// The guest agent binary: $VIAL_AGENT_BIN, else vial-agent next to this binary, else
// ../lib/vial/vial-agent. Throws Error(unavailable) naming the build command when absent.
std::filesystem::path agent_binary();

// The image build script: $VIAL_IMAGES_DIR/build-image, else the source tree's images/, else
// ../share/vial/images/ next to this binary.
std::filesystem::path image_build_script();

// "canonical-path device inode size mtime_ns" of a file: changes whenever the file is
// replaced or rewritten. Part of cache keys (templates); empty if it can't be stat'ed.
std::string file_identity(const std::filesystem::path& path);
// The same without the path: one value for all hard links of a file.
std::string inode_identity(const std::filesystem::path& path);

// Creates dir (and parents) with mode 0700 if missing; throws Error on failure.
void ensure_private_dir(const std::filesystem::path& dir);

// Best effort, for caches: writes `content` to a temp file beside `path` and renames it over
// `path`, so concurrent readers see the old file or the new one, never half of one.
void replace_file(const std::filesystem::path& path, const std::string& content);

}  // namespace vial
