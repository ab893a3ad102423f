// Kernel set-up for the guest's network (issue 13). The guest has no network device: its
// only way out is the agent's channel to the host. To hand every TCP connection to the agent
// without iptables or modules (the cloud kernel has netfilter only as modules, and a pack's
// root filesystem may have no tools at all), the agent
//   - gives `lo` an extra address (kGuestAddress), so glibc's AI_ADDRCONFIG sees IPv4;
//   - routes every IPv4 address to `lo` (an "AnyIP" local route), so a connect anywhere
//     reaches this guest's own stack;
//   - attaches a BPF sk_lookup program to the network namespace that steers every TCP
//     connection, except those to 127.0.0.1, to one listening socket of the agent's.
// The accepted socket's local address is where the program wanted to go. Guest root can undo
// all of this, which only cuts its own network: the policy is enforced on the host.
#pragma once

#include <string>

namespace vial::guest {

inline constexpr const char* kGuestAddress = "10.0.2.15";

// Adds the address and the route, then steers TCP to `listener` (a listening TCP socket).
// Returns "" or what failed. The BPF link stays attached for the life of the agent.
std::string steer_tcp_to(int listener);

}  // namespace vial::guest
