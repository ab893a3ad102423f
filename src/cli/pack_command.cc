// `vial pack create|inspect`: portable files a machine boots from (see docs/packs.md).
#include <cstdio>
#include <iostream>
#include <memory>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "pack/interrupt.h"
#include "pack/pack.h"
#include "util/error.h"

namespace vial::cli {
namespace {

struct PackArgs {
  std::string image;
  std::string out;
  std::string file;
  bool force = false;
  bool json = false;
};

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

uint64_t file_size(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

std::string joined(const std::vector<std::string>& items) {
  return items.empty() ? "-" : dump_json(items);
}

// The same JSON for create and inspect: where the pack is, its size, its manifest.
void print_json(const std::string& path, const pack::PackManifest& m) {
  std::cout << dump_json({{"path", path}, {"bytes", file_size(path)}, {"manifest", pack::to_json(m)}}, 2) << std::endl;
}

void print_summary(const std::string& path, const pack::PackManifest& m) {
  std::printf("pack        %s (%s)\n", path.c_str(), mib(file_size(path)).c_str());
  std::printf("format      %d, %s\n", m.format_version, m.arch.c_str());
  std::printf("created     %s by %s\n", m.created_at.c_str(), m.created_by.c_str());
  std::printf("source      %s %s\n", m.source.kind.c_str(), m.source.ref.c_str());
  std::printf("disk        %s (ext4, qcow2)\n", mib(m.rootfs_virtual_size).c_str());
  std::printf("parts       (all verified: sizes and SHA-256 match)\n");
  for (const auto& p : m.parts) {
    std::printf("  %-14s %12s  sha256:%s\n", p.name.c_str(), mib(p.size).c_str(), p.sha256.c_str());
  }
  std::printf("entrypoint  %s\n", joined(m.defaults.entrypoint).c_str());
  std::printf("cmd         %s\n", joined(m.defaults.cmd).c_str());
  std::printf("env         %s\n", joined(m.defaults.env).c_str());
  std::printf("workdir     %s\n", m.defaults.workdir.empty() ? "-" : m.defaults.workdir.c_str());
}

// Runs a pack command with Ctrl-C turned into a clean unwind (temp files removed).
int guarded_run(bool json, const std::function<void()>& body) {
  pack::InterruptGuard guard;
  try {
    body();
    return kExitOk;
  } catch (const Error& e) {
    int code = report_error(e, json, kExitFailure);
    return e.kind() == ErrorKind::cancelled ? kExitInterrupted : code;
  } catch (const std::exception& e) {
    return report_error(e, json, kExitFailure);
  }
}

int create(const PackArgs& a) {
  return guarded_run(a.json, [&] {
    pack::CreateOptions options;
    options.image = a.image;
    options.out = a.out;
    options.force = a.force;
    options.progress = [](const std::string& line) { std::fprintf(stderr, "vial pack: %s...\n", line.c_str()); };
    pack::PackManifest m = pack::create(options);
    if (a.json) {
      print_json(a.out, m);
    } else {
      std::printf("created %s (%s) from %s %s\n", a.out.c_str(), mib(file_size(a.out)).c_str(), m.source.kind.c_str(),
                  m.source.ref.c_str());
    }
  });
}

int inspect(const PackArgs& a) {
  return guarded_run(a.json, [&] {
    pack::PackManifest m = pack::read_manifest(a.file);
    if (a.json) {
      print_json(a.file, m);
    } else {
      print_summary(a.file, m);
    }
  });
}

}  // namespace

void add_pack_command(CLI::App& app) {
  CLI::App* pack = app.add_subcommand("pack", "Make and inspect packs: one file a machine boots from");
  pack->require_subcommand(1);

  auto create_args = std::make_shared<PackArgs>();
  CLI::App* c = pack->add_subcommand("create", "Pack a root filesystem, kernel and initramfs into one file");
  c->add_option("--image", create_args->image,
                "A vial image (python, javascript, shell), a root filesystem folder or tarball "
                "(.tar, .tar.gz, .tar.zst), a `docker save` archive, or a Docker image name:tag")
      ->required();
  c->add_option("-o,--output", create_args->out, "The pack file to write (any name, e.g. agent.vial)")->required();
  c->add_flag("-f,--force", create_args->force, "Replace the output file if it exists");
  c->add_flag("--json", create_args->json, "Print {path, bytes, manifest} as JSON");
  c->footer("Progress goes to stderr. Foreign root filesystems get vial's kernel and initramfs\n"
            "(from the python image). See docs/packs.md.");
  c->callback([create_args] { throw CLI::RuntimeError(create(*create_args)); });

  auto inspect_args = std::make_shared<PackArgs>();
  CLI::App* i = pack->add_subcommand("inspect", "Verify a pack and show its manifest");
  i->add_option("file", inspect_args->file, "The pack file")->required();
  i->add_flag("--json", inspect_args->json, "Print {path, bytes, manifest} as JSON");
  i->callback([inspect_args] { throw CLI::RuntimeError(inspect(*inspect_args)); });
}

}  // namespace vial::cli
