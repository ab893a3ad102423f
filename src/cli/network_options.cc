#include "cli/network_options.h"

namespace vial::cli {

const char* const kNetworkHelp =
    "Network: none unless asked. --net reaches public addresses only (never the host, private\n"
    "ranges or cloud metadata); --allow-host NAME (repeatable, *.example.com for subdomains) allows\n"
    "only those names; --allow-cidr reaches a blocked range on purpose. DNS, TLS SNI and HTTP Host\n"
    "are checked on the host; every decision goes to $VIAL_HOME/logs/egress.ndjson.\n";

void add_network_options(CLI::App* cmd, net::NetOptions& o, bool ports) {
  // One value per occurrence: `--allow-host a.test prog.py` must leave prog.py to the positional.
  cmd->add_flag("--net", o.net, "Give the guest network access to public addresses (off by default)");
  cmd->add_option("--allow-host", o.allow_hosts,
                  "Only these host names may be reached: pypi.org or *.pythonhosted.org (repeatable; implies --net)")
      ->allow_extra_args(false);
  cmd->add_option("--allow-cidr", o.allow_cidrs,
                  "Addresses reachable without a name, e.g. 10.1.2.0/24 (repeatable; implies --net)")
      ->allow_extra_args(false);
  cmd->add_option("--add-host", o.add_hosts, "Answer NAME with IP in the guest's DNS: NAME:IP (repeatable)")
      ->allow_extra_args(false);
  if (ports) {
    cmd->add_option("-p,--port", o.ports,
                    "Publish a guest TCP port on the host: [HOST_IP:]HOST_PORT:GUEST_PORT (HOST_IP 127.0.0.1 "
                    "by default; repeatable)")
        ->allow_extra_args(false);
  }
}

}  // namespace vial::cli
