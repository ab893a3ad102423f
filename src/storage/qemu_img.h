// Overlays made by one `qemu-img create` process (~7 ms): for the rare overlay whose base is
// seen once (a machine's disk, a boot snapshot's), where a pristine copy (pristine_overlays.h)
// would first need a storage daemon and a cache entry that is never used again.
#pragma once

#include <filesystem>
#include <string>

namespace vial {

// Creates `target` as a qcow2 overlay whose backing file name is `backing` as given (a
// relative name resolves from target's folder). Throws Error(unavailable) with qemu-img's words.
void create_overlay_with_qemu_img(const std::string& backing, const std::filesystem::path& target);

}  // namespace vial
