// Maps "METHOD /path" to a handler. Patterns have literal segments, `{name}` (one segment) and a
// final `{name...}` (the rest of the path). The table is also what docs/openapi.json is checked
// against, so the documented API can't drift from the served one.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "server/exchange.h"

namespace vial::server {

using Handler = std::function<asio::awaitable<void>(Exchange&)>;

struct Route {
  std::string method;   // "GET", "POST", "PUT", "DELETE"
  std::string pattern;  // "/v1/sessions/{id}/files/{path...}"
  Handler handler;
  bool needs_auth = true;
  // Largest body this route accepts; 0: the server's default JSON limit.
  uint64_t body_limit = 0;
};

// The pattern as OpenAPI writes it ("{path...}" becomes "{path}").
std::string openapi_path(const std::string& pattern);

class Router final {
 public:
  void add(Route route);
  struct Match {
    const Route* route = nullptr;
    std::map<std::string, std::string> params;
    // No route for this method, but some for the path: the methods that exist (for 405).
    std::vector<std::string> allowed;
  };
  // `path` without the query string. Params are percent-decoded.
  Match match(std::string_view method, std::string_view path) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  std::vector<Route> routes_;
};

}  // namespace vial::server
