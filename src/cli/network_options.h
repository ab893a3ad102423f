// The network flags shared by `vial run`, `vial session create` and `vial machine create`
// (issue 13), so every surface spells them the same way.
#pragma once

#include <CLI/CLI.hpp>

#include "net/policy.h"

namespace vial::cli {

// Adds --net, --allow-host, --allow-cidr, --add-host and, with `ports`, -p/--port.
void add_network_options(CLI::App* cmd, net::NetOptions& options, bool ports);

// The help footer's lines about the network.
extern const char* const kNetworkHelp;

}  // namespace vial::cli
