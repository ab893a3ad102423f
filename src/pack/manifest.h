// The manifest.json at the head of every pack: what the pack holds and how to check it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vial::pack {

// Bumped when a reader of the previous version could not boot a new pack correctly.
inline constexpr int kFormatVersion = 1;
// The "kind" field: tells a pack's manifest.json from any other JSON file (docker's, say).
inline constexpr const char* kManifestKind = "vial-pack";
inline constexpr const char* kManifestName = "manifest.json";

// The parts every pack holds, in the order they follow the manifest in the archive.
inline constexpr const char* kKernelPart = "vmlinux";
inline constexpr const char* kInitramfsPart = "initramfs";
inline constexpr const char* kRootfsPart = "rootfs.qcow2";
const std::vector<std::string>& part_names();

struct PackPart {
  std::string name;
  uint64_t size = 0;
  std::string sha256;  // 64 lowercase hex digits
};

// Where the root filesystem came from. kind: vial-image | directory | tarball | docker-archive
// | docker-image; ref: the --image argument as given.
struct PackSource {
  std::string kind;
  std::string ref;
};

// How a machine made from the pack runs by default (from a Docker image config; empty otherwise).
struct PackDefaults {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string workdir;
};

struct PackManifest {
  int format_version = kFormatVersion;
  std::string arch = "x86_64";
  std::string created_at;  // ISO 8601 UTC
  std::string created_by;  // "vial X.Y.Z"
  PackSource source;
  std::vector<PackPart> parts;  // in part_names() order
  uint64_t rootfs_virtual_size = 0;  // the ext4 disk size the guest sees, bytes
  PackDefaults defaults;

  const PackPart* part(const std::string& name) const;
};

nlohmann::json to_json(const PackManifest& manifest);
// Throws Error(invalid_input) naming the missing or malformed field; a format_version newer
// than this vial understands gets an error saying to upgrade vial. `origin` names the file.
PackManifest manifest_from_json(const nlohmann::json& json, const std::string& origin);

// Now as ISO 8601 UTC, e.g. 2024-05-01T12:00:00Z.
std::string utc_now_iso8601();

}  // namespace vial::pack
