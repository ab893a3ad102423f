// `vial machine exec` / `shell`: one program in a running machine, over its relay socket,
// with stdout and stderr passed through byte for byte and stdin streamed as it arrives
// (so an interactive `sh -i` works; AgentClient can only send stdin all at once).
#pragma once

#include <filesystem>

#include "agent/protocol.h"

namespace vial::machine {

// Runs `request` and returns its exit code as a shell reports it: the program's own, 128+N
// when killed by signal N, 124 when it timed out. With forward_stdin, this process's stdin
// goes to the program until EOF. Throws Error when the machine can't be reached or stops.
int stream_exec(const std::filesystem::path& relay_socket, agent::ExecRequest request, bool forward_stdin);

}  // namespace vial::machine
