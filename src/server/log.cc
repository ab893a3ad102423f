#include "server/log.h"

#include <chrono>

#include <spdlog/sinks/stdout_sinks.h>

#include "sandbox/run_json.h"
#include "server/sessions.h"

namespace vial::server {
namespace {

bool g_json = false;

}  // namespace

void init_logging(bool json) {
  g_json = json;
  auto logger = spdlog::stderr_logger_mt("vial-serve");
  // JSON lines are complete objects built by log(); text lines get a time and level prefix.
  logger->set_pattern(json ? "%v" : "%Y-%m-%d %H:%M:%S.%e %l %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void log(spdlog::level::level_enum level, const std::string& msg, const nlohmann::json& fields) {
  if (!spdlog::should_log(level)) return;
  if (g_json) {
    nlohmann::json line = {{"ts", iso8601(std::chrono::system_clock::now())},
                           {"level", spdlog::level::to_string_view(level).data()},
                           {"msg", msg}};
    line.update(fields);
    spdlog::log(level, "{}", dump_json(line));
    return;
  }
  std::string text = msg;
  for (const auto& [key, value] : fields.items()) {
    text += " " + key + "=" + (value.is_string() ? value.get<std::string>() : dump_json(value));
  }
  spdlog::log(level, "{}", text);
}

}  // namespace vial::server
