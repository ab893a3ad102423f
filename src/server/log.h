// Structured logs of the server: one line per event, as text ("msg k=v ...") or as a JSON object
// ({"ts","level","msg",...fields}) with `vial serve --log-json`.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace vial::server {

void init_logging(bool json);
void log(spdlog::level::level_enum level, const std::string& msg, const nlohmann::json& fields = nlohmann::json::object());

}  // namespace vial::server
