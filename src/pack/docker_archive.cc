#include "pack/docker_archive.h"

#include <archive_entry.h>

#include <fstream>
#include <regex>

#include "pack/archive_util.h"
#include "pack/interrupt.h"
#include "pack/layers.h"
#include "pack/whiteout.h"
#include "util/error.h"
#include "util/process.h"

namespace fs = std::filesystem;

namespace vial::pack {
namespace {

using nlohmann::json;

bool is_hex(const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string::npos; }

// Top-level names `docker save` writes: manifest.json, repositories, index.json, oci-layout,
// <hex>.json configs, <hex>/ layer folders (legacy) and blobs/ (OCI).
bool is_docker_save_name(const std::string& first_component) {
  if (first_component == "manifest.json" || first_component == "repositories" || first_component == "index.json" ||
      first_component == "oci-layout" || first_component == "blobs") {
    return true;
  }
  std::string stem = first_component;
  if (stem.size() > 5 && stem.ends_with(".json")) stem.resize(stem.size() - 5);
  return is_hex(stem);
}

json read_json(const fs::path& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw Error(ErrorKind::invalid_input, "the docker save archive has no " + what);
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) throw Error(ErrorKind::invalid_input, "the docker save archive's " + what + " is not valid JSON");
  return j;
}

// A path named inside the archive, resolved in the unpacked folder; never outside it.
fs::path member(const fs::path& dir, const json& name, const std::string& what) {
  if (!name.is_string()) throw Error(ErrorKind::invalid_input, "the docker save archive's manifest.json names no " + what);
  auto norm = normalize_entry_path(name.get<std::string>());
  fs::path resolved = norm ? fs::weakly_canonical(dir / *norm) : fs::path();
  auto rel = resolved.lexically_relative(dir);
  if (!norm || rel.empty() || *rel.begin() == ".." || !fs::is_regular_file(resolved)) {
    throw Error(ErrorKind::invalid_input, "the docker save archive lacks its " + what + " '" + name.get<std::string>() + "'");
  }
  return resolved;
}

std::vector<std::string> strings(const json& config, const char* key) {
  std::vector<std::string> out;
  if (auto it = config.find(key); it != config.end() && it->is_array()) {
    for (const auto& v : *it) {
      if (v.is_string()) out.push_back(v.get<std::string>());
    }
  }
  return out;
}

}  // namespace

bool looks_like_docker_archive(const fs::path& path) {
  ArchiveReader in = open_tar_reader(path, path.string());
  for (;;) {
    throw_if_interrupted();
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF) return false;
    if (r < ARCHIVE_WARN) {
      throw Error(ErrorKind::invalid_input, path.string() + " is not a readable tar archive (" + archive_message(in.get()) + ")");
    }
    auto norm = normalize_entry_path(archive_entry_pathname(entry));
    if (!norm || norm->empty()) continue;
    const std::string first = norm->substr(0, norm->find('/'));
    if (*norm == "manifest.json") return true;
    if (!is_docker_save_name(first)) return false;  // e.g. etc/ or bin/: a root filesystem
  }
}

DockerImage unpack_docker_archive(const fs::path& archive_path, const fs::path& dir_in) {
  const fs::path dir = fs::canonical(dir_in);
  extract_tar(archive_path, dir, "the docker save archive " + archive_path.string());
  json manifest = read_json(dir / "manifest.json", "manifest.json");
  if (!manifest.is_array() || manifest.empty()) {
    throw Error(ErrorKind::invalid_input, "the docker save archive's manifest.json lists no image");
  }
  if (manifest.size() > 1) {
    throw Error(ErrorKind::invalid_input, "the docker save archive holds " + std::to_string(manifest.size()) +
                                              " images: save just one (docker save -o FILE IMAGE)");
  }
  const json& image = manifest[0];
  if (!image.is_object()) throw Error(ErrorKind::invalid_input, "the docker save archive's manifest.json is malformed");
  DockerImage out;
  json config = read_json(member(dir, image.value("Config", json()), "image config"), "image config");
  out.architecture = config.value("architecture", std::string());
  if (!out.architecture.empty() && out.architecture != "amd64") {
    throw Error(ErrorKind::invalid_input, "the image is built for " + out.architecture +
                                              ", but vial runs x86_64 (amd64) guests: save the amd64 variant "
                                              "(docker pull --platform linux/amd64 IMAGE)");
  }
  if (auto it = config.find("config"); it != config.end() && it->is_object()) {
    out.defaults.entrypoint = strings(*it, "Entrypoint");
    out.defaults.cmd = strings(*it, "Cmd");
    out.defaults.env = strings(*it, "Env");
    out.defaults.workdir = it->value("WorkingDir", std::string());
  }
  auto layers = image.find("Layers");
  if (layers == image.end() || !layers->is_array()) {
    throw Error(ErrorKind::invalid_input, "the docker save archive's manifest.json has no Layers list");
  }
  for (const auto& layer : *layers) out.layers.push_back(member(dir, layer, "layer"));
  return out;
}

bool is_docker_reference(const std::string& s) {
  static const std::regex re(
      "[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"
      "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?");
  return s.size() <= 255 && std::regex_match(s, re);
}

void docker_save(const std::string& reference, const fs::path& out, const fs::path& log) {
  if (!find_program("docker")) {
    throw Error(ErrorKind::unavailable,
                "'" + reference + "' is not a file, a directory or a vial image (python, javascript, shell), and "
                "the docker CLI needed to export it as a Docker image is not installed: install docker, or run "
                "`docker save -o image.tar " + reference + "` where docker is and pass image.tar");
  }
  run_tool({"docker", "save", "-o", out.string(), reference},
           "exporting the Docker image '" + reference + "' (docker save; is it a file path with a typo?)", log,
           ErrorKind::unavailable);
}

}  // namespace vial::pack
