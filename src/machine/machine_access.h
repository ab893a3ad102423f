// What the CLI and the HTTP API both need to use a machine: its status as JSON, the base of
// an exec request in it, and an agent connection through its relay.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "agent/protocol.h"
#include "machine/machine_store.h"
#include "vm/agent_client.h"

namespace vial::machine {

// name, state, cpus, memory_mib, pid, supervisor_pid, created_at, started_at, image, error.
nlohmann::json status_json(const MachineStatus& s);

// The record of a running machine, or Error(conflict) naming the command that starts it.
MachineRecord require_running(MachineStore& store, const std::string& name);

// The machine's env and workdir, no output limits and no timeout unless asked, as root: a
// machine's commands are its user's own (as with smolvm).
agent::ExecRequest base_exec_request(const MachineRecord& record);

// An AgentClient on the machine's relay socket, hello done.
asio::awaitable<std::shared_ptr<AgentClient>> connect_machine(const std::string& name);

}  // namespace vial::machine
