// /v1/machines: the named machines of `vial machine`, as resources. The store is SQLite and
// start/stop wait for the guest, so that work runs on a small thread pool; exec talks to the
// machine's relay from the event loop like any other agent.
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "machine/machine_access.h"
#include "sandbox/run_json.h"
#include "server/api.h"
#include "server/log.h"

namespace vial::server {
namespace {

using nlohmann::json;
using namespace vial::machine;

// An exec in a machine from {argv, env, cwd, timeout, stdin | stdin_base64}: argv is required
// (machines run programs, not snippets), no timeout unless given.
agent::ExecRequest machine_exec_request(const MachineRecord& record, const json& body, std::optional<std::string>& stdin_data) {
  check_known_fields(body, {"argv", "env", "cwd", "timeout", "stdin", "stdin_base64"});
  agent::ExecRequest request = base_exec_request(record);
  read_string_array(body, "argv", request.argv);
  if (request.argv.empty()) throw Error(ErrorKind::invalid_input, "field 'argv': required, a non-empty array of strings");
  read_string_map(body, "env", request.env);
  if (auto cwd = string_field(body, "cwd")) request.cwd = *cwd;
  if (body.contains("timeout")) {
    const json& t = body["timeout"];
    if (!t.is_number() || t.get<double>() <= 0 || t.get<double>() > 24 * 3600) {
      throw Error(ErrorKind::invalid_input, "field 'timeout': must be seconds, more than 0 and at most 86400");
    }
    request.timeout_ms = static_cast<uint32_t>(t.get<double>() * 1000);
  }
  stdin_data = get_bytes(body, "stdin");
  return request;
}

}  // namespace

template <typename F>
auto Api::offload(const F& work) -> asio::awaitable<decltype(work())> {
  using T = decltype(work());
  auto home = co_await asio::this_coro::executor;
  // Plain handlers rather than a coroutine on the pool: GCC 12 frees a coroutine lambda's
  // captures twice. The work guard keeps the event loop alive while only the pool works.
  auto initiate = [this, home, work](auto handler) mutable {
    asio::post(blocking_, [work = std::move(work), handler = std::move(handler), home,
                           guard = asio::make_work_guard(home)]() mutable {
      std::exception_ptr error;
      T value{};
      try {
        value = work();
      } catch (...) {
        error = std::current_exception();
      }
      asio::post(home, [handler = std::move(handler), error, value = std::move(value)]() mutable {
        std::move(handler)(error, std::move(value));
      });
    });
  };
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, T)>(
      initiate, asio::use_awaitable);
}

asio::awaitable<void> Api::list_machines(Exchange& ex) {
  const auto work = [] {
    json list = json::array();
    for (const auto& s : MachineStore().list()) list.push_back(status_json(s));
    return list;
  };
  json machines = co_await offload(work);
  json body = {{"machines", machines}};
  co_await ex.send_json(http::status::ok, body);
}

namespace {
// The API's network object in the strings a machine's config keeps (as the CLI flags give them).
net::NetOptions options_of(const net::NetPolicy& p) {
  net::NetOptions o;
  o.net = p.enabled;
  for (const auto& h : p.allow_hosts) o.allow_hosts.push_back(h.text);
  for (const auto& c : p.allow_cidrs) o.allow_cidrs.push_back(c.str());
  for (const auto& [name, ip] : p.add_hosts) o.add_hosts.push_back(name + ":" + net::ipv4_str(ip));
  for (const auto& port : p.ports) o.ports.push_back(port.str());
  return o;
}
}  // namespace

asio::awaitable<void> Api::create_machine(Exchange& ex) {
  refuse_while_draining();
  json body = ex.json_body();
  check_known_fields(body, {"name", "from", "config_file", "network"});
  CreateOptions options;
  options.name = string_field(body, "name").value_or("");
  if (options.name.empty()) throw Error(ErrorKind::invalid_input, "field 'name': required");
  // Paths on the server's host: the API is local (a 0600 socket, or TCP with a token).
  if (auto from = string_field(body, "from")) options.pack = *from;
  if (auto config = string_field(body, "config_file")) options.config_file = *config;
  if (body.contains("network")) options.network = options_of(net::policy_from_json(body["network"]));
  const auto work = [options] {
    MachineStore store;
    store.create(options);
    return status_json(store.status(options.name));
  };
  json status = co_await offload(work);
  log(spdlog::level::info, "machine created", {{"machine", options.name}});
  co_await ex.send_json(http::status::created, status);
}

asio::awaitable<void> Api::get_machine(Exchange& ex) {
  std::string name = ex.param("name");
  const auto work = [name] { return status_json(MachineStore().status(name)); };
  json status = co_await offload(work);
  co_await ex.send_json(http::status::ok, status);
}

asio::awaitable<void> Api::start_machine(Exchange& ex) {
  refuse_while_draining();
  std::string name = ex.param("name");
  Accel accel = manager_->settings().accel;
  const auto work = [name, accel] {
    MachineStore store;
    store.start(name, accel);
    return status_json(store.status(name));
  };
  json status = co_await offload(work);
  log(spdlog::level::info, "machine started", {{"machine", name}});
  co_await ex.send_json(http::status::ok, status);
}

asio::awaitable<void> Api::stop_machine(Exchange& ex) {
  std::string name = ex.param("name");
  const auto work = [name] {
    MachineStore store;
    store.stop(name);
    return status_json(store.status(name));
  };
  json status = co_await offload(work);
  log(spdlog::level::info, "machine stopped", {{"machine", name}});
  co_await ex.send_json(http::status::ok, status);
}

asio::awaitable<void> Api::delete_machine(Exchange& ex) {
  std::string name = ex.param("name");
  std::string force_arg = ex.query("force").value_or("false");
  if (force_arg != "true" && force_arg != "false" && force_arg != "1" && force_arg != "0") {
    throw Error(ErrorKind::invalid_input, "query 'force': must be true or false");
  }
  const bool force = force_arg == "true" || force_arg == "1";
  const auto work = [name, force] {
    MachineStore().remove(name, force);
    return true;
  };
  co_await offload(work);
  log(spdlog::level::info, "machine deleted", {{"machine", name}});
  json body = {{"name", name}, {"deleted", true}};
  co_await ex.send_json(http::status::ok, body);
}

asio::awaitable<void> Api::machine_exec(Exchange& ex) {
  refuse_while_draining();
  const auto started = std::chrono::steady_clock::now();
  std::string name = ex.param("name");
  json body = ex.json_body();
  const auto work = [name] {
    MachineStore store;
    return require_running(store, name);
  };
  MachineRecord record = co_await offload(work);
  std::optional<std::string> stdin_data;
  agent::ExecRequest request = machine_exec_request(record, body, stdin_data);
  auto agent = co_await connect_machine(name);
  Executor in_machine = [&](const ExecCallbacks& callbacks, bool collect) -> asio::awaitable<RunResult> {
    RunResult result;
    result.source = "machine";
    const ExecCallbacks sinks = output_sinks(result, callbacks, collect);
    const auto exec_start = std::chrono::steady_clock::now();
    agent::ExecResult exit = co_await agent->exec(request, sinks, stdin_data);
    result.timing.exec_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - exec_start).count();
    take_exit(result, exit);
    co_return result;
  };
  std::exception_ptr failed;
  try {
    const std::string metrics_label = "machine";  // images may be pack paths: not a label
    co_await respond_with_run(ex, metrics_label, in_machine, started);
  } catch (...) {
    failed = std::current_exception();
  }
  // On every path: closing the relay connection kills a program whose client went away.
  agent->close();
  if (failed) std::rethrow_exception(failed);
}

}  // namespace vial::server
