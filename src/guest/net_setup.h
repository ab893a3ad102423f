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

// At boot, so that templates and boot snapshots carry it: loads the program and attaches it
// to the network namespace with an empty socket map, which steers nothing. (Attaching flips
// a kernel static key, i.e. patches kernel text: under TCG that costs a clone ~50 ms, paid
// once per template instead.) Sets `map_fd`; returns "" or what failed. The program and link
// stay attached for the life of the agent.
std::string attach_steering(int& map_fd);

// At net_up: adds the address and the route, then puts `listener` (a listening TCP socket) in
// the map, which starts the steering. Returns "" or what failed.
std::string steer_tcp_to(int map_fd, int listener);

}  // namespace vial::guest
