#include "server/router.h"

namespace vial::server {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

// Matches `path` against `pattern`, filling params; the rest-parameter keeps its slashes.
bool match_pattern(std::string_view pattern, std::string_view path, std::map<std::string, std::string>& params) {
  auto want = split_path(pattern);
  auto have = split_path(path);
  for (size_t i = 0; i < want.size(); ++i) {
    std::string_view w = want[i];
    bool is_param = w.size() > 2 && w.front() == '{' && w.back() == '}';
    if (is_param && w.ends_with("...}")) {
      if (i >= have.size()) return false;
      // The raw rest of the path after the previous segment's slash, so "files//etc" gives
      // "/etc" and "a//b" or "../" reach the path policy as sent.
      size_t offset = i == 0 ? 1 : static_cast<size_t>(have[i - 1].data() + have[i - 1].size() - path.data()) + 1;
      params[std::string(w.substr(1, w.size() - 5))] = percent_decode(path.substr(offset));
      return true;
    }
    if (i >= have.size()) return false;
    if (is_param) {
      params[std::string(w.substr(1, w.size() - 2))] = percent_decode(have[i]);
    } else if (w != have[i]) {
      return false;
    }
  }
  return want.size() == have.size();
}

}  // namespace

std::string openapi_path(const std::string& pattern) {
  std::string out = pattern;
  for (size_t pos; (pos = out.find("...}")) != std::string::npos;) out.erase(pos, 3);
  return out;
}

void Router::add(Route route) { routes_.push_back(std::move(route)); }

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match result;
  for (const Route& route : routes_) {
    std::map<std::string, std::string> params;
    if (!match_pattern(route.pattern, path, params)) continue;
    if (route.method == method) {
      result.route = &route;
      result.params = std::move(params);
      result.allowed.clear();
      return result;
    }
    result.allowed.push_back(route.method);
  }
  return result;
}

}  // namespace vial::server
