// `vial image build|ls|rm`: guest images per language.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "images/image_store.h"
#include "util/error.h"

namespace vial::cli {
namespace {

struct ImageArgs {
  std::vector<std::string> languages;
  bool all = false;
  bool force = false;
  bool json = false;
};

std::vector<std::string> selected(const ImageArgs& a) {
  if (a.all || a.languages.empty()) return image_languages();
  for (const auto& l : a.languages) check_image_language(l);
  return a.languages;
}

int build(const ImageArgs& a) {
  try {
    for (const auto& lang : selected(a)) {
      int rc = build_image(lang, {.force = a.force});
      if (rc != 0) {
        std::fprintf(stderr, "vial: building the %s image failed (exit %d); see the messages above\n",
                     lang.c_str(), rc);
        return kExitFailure;
      }
    }
    return kExitOk;
  } catch (const std::exception& e) {
    return report_error(e, false, kExitFailure);
  }
}

int list(const ImageArgs& a) {
  auto images = list_images();
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& i : images) {
      out.push_back({{"language", i.language}, {"path", i.dir.string()}, {"disk_bytes", i.disk_bytes},
                     {"manifest", i.manifest}});
    }
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  if (images.empty()) {
    std::cout << "no images built yet: run `vial image build python` (or `vial image build` for all)\n";
    return kExitOk;
  }
  std::printf("%-12s %-10s %-24s %s\n", "LANGUAGE", "SIZE", "BUILT", "PACKAGES");
  for (const auto& i : images) {
    std::string packages;
    if (auto it = i.manifest.find("packages"); it != i.manifest.end() && it->is_object()) {
      for (const auto& [name, version] : it->items()) {
        packages += (packages.empty() ? "" : ", ") + name + " " + (version.is_string() ? version.get<std::string>() : "?");
      }
    }
    std::printf("%-12s %-10s %-24s %s\n", i.language.c_str(),
                (std::to_string(i.disk_bytes / (1024 * 1024)) + " MiB").c_str(),
                i.manifest.value("built_at", std::string("?")).c_str(), packages.c_str());
  }
  return kExitOk;
}

int remove(const ImageArgs& a) {
  try {
    if (a.languages.empty() && !a.all) {
      throw Error(ErrorKind::invalid_input, "name the images to remove (python, javascript, shell) or pass --all");
    }
    for (const auto& lang : selected(a)) {
      std::printf("%s: %s\n", lang.c_str(), remove_image(lang) ? "removed" : "not built, nothing to remove");
    }
    return kExitOk;
  } catch (const std::exception& e) {
    return report_error(e, false, kExitFailure);
  }
}

}  // namespace

void add_image_command(CLI::App& app) {
  CLI::App* image = app.add_subcommand("image", "Build, list and remove guest images");
  image->require_subcommand(1);

  auto build_args = std::make_shared<ImageArgs>();
  CLI::App* b = image->add_subcommand("build", "Build guest images (kernel, initramfs, root filesystem)");
  b->footer("Without a language, builds all. Up-to-date images are skipped; only the initramfs is\n"
            "rebuilt when just the guest agent changed.");
  b->add_option("languages", build_args->languages, "python, javascript, shell");
  b->add_flag("--all", build_args->all, "Build every language");
  b->add_flag("--force", build_args->force, "Rebuild even if up to date");
  b->callback([build_args] { throw CLI::RuntimeError(build(*build_args)); });

  auto ls_args = std::make_shared<ImageArgs>();
  CLI::App* l = image->add_subcommand("ls", "List built images");
  l->add_flag("--json", ls_args->json, "Print a JSON list");
  l->callback([ls_args] { throw CLI::RuntimeError(list(*ls_args)); });

  auto rm_args = std::make_shared<ImageArgs>();
  CLI::App* r = image->add_subcommand("rm", "Remove built images");
  r->add_option("languages", rm_args->languages, "python, javascript, shell");
  r->add_flag("--all", rm_args->all, "Remove every image");
  r->callback([rm_args] { throw CLI::RuntimeError(remove(*rm_args)); });
}

}  // namespace vial::cli
