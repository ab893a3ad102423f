// libFuzzer target: arbitrary bytes through FrameDecoder (split at a fuzzer-chosen point), and
// every decoded payload through the JSON body parsers. Must never crash or hang.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "agent/protocol.h"

using namespace vial::agent;

namespace {
template <typename T>
void try_parse(const std::string& payload) {
  try {
    (void)parse_body<T>(payload);
  } catch (const std::invalid_argument&) {
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t split = in.empty() ? 0 : data[0] % (in.size() + 1);
  FrameDecoder d;
  auto drain = [&] {
    while (auto item = d.next()) {
      if (!item->frame) continue;
      const std::string& p = item->frame->payload;
      try_parse<ExecRequest>(p);
      try_parse<ExecResult>(p);
      try_parse<ErrorBody>(p);
      try_parse<HelloBody>(p);
    }
  };
  d.feed(in.substr(0, split));
  drain();
  d.feed(in.substr(split));
  drain();
  // Also parse the raw input as a body directly.
  std::string raw(in);
  try_parse<ExecRequest>(raw);
  try_parse<ExecResult>(raw);
  return 0;
}
