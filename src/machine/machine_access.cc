#include "machine/machine_access.h"

#include <cstdint>

#include <boost/asio/this_coro.hpp>

#include "util/error.h"

namespace vial::machine {

nlohmann::json status_json(const MachineStatus& s) {
  const MachineRecord& r = s.record;
  auto or_null = [](bool present, nlohmann::json value) { return present ? value : nlohmann::json(nullptr); };
  return {{"name", r.name},
          {"state", to_string(s.state)},
          {"cpus", r.config.cpus},
          {"memory_mib", r.config.memory_mib},
          {"pid", or_null(s.pid > 0, s.pid)},
          {"supervisor_pid", or_null(s.state == MachineState::running, r.supervisor_pid)},
          {"created_at", r.created_at},
          {"started_at", or_null(!r.started_at.empty(), r.started_at)},
          {"image", r.image},
          {"network", net::to_json(net::make_policy(r.config.network))},
          {"error", or_null(!s.reason.empty(), s.reason)}};
}

MachineRecord require_running(MachineStore& store, const std::string& name) {
  MachineStatus s = store.status(name);
  if (s.state != MachineState::running) {
    throw Error(ErrorKind::conflict, "machine '" + name + "' is not running (it is " + std::string(to_string(s.state)) +
                                         "): `vial machine start --name " + name + "`");
  }
  return s.record;
}

agent::ExecRequest base_exec_request(const MachineRecord& record) {
  agent::ExecRequest request;
  request.env = record.config.env;
  request.cwd = record.config.workdir;
  request.timeout_ms = UINT32_MAX;
  request.stdout_limit = UINT64_MAX;
  request.stderr_limit = UINT64_MAX;
  request.as_root = true;
  return request;
}

asio::awaitable<std::shared_ptr<AgentClient>> connect_machine(const std::string& name) {
  AgentClient::Socket socket(co_await asio::this_coro::executor);
  boost::system::error_code ec;
  socket.connect({relay_socket(name).string()}, ec);
  if (ec) {
    throw Error(ErrorKind::unavailable, "cannot reach machine '" + name + "' at " + relay_socket(name).string() + ": " +
                                            ec.message());
  }
  auto agent = AgentClient::create(std::move(socket));
  co_await agent->hello();
  co_return agent;
}

}  // namespace vial::machine
