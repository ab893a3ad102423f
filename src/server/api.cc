#include "server/api.h"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "images/image_store.h"
#include "sandbox/guest_files.h"
#include "sandbox/run_json.h"
#include "server/log.h"
#include "util/base64.h"
#include "vm/guest_boot.h"

namespace vial::server {
namespace {

using nlohmann::json;
using namespace boost::asio::experimental::awaitable_operators;

// A VM that goes back (destroyed) when the request ends, however it ends.
class VmLease final {
 public:
  VmLease(std::shared_ptr<VmManager> manager, std::shared_ptr<Vm> vm) : manager_(std::move(manager)), vm_(std::move(vm)) {}
  ~VmLease() { manager_->destroy_vm(vm_); }
  VmLease(const VmLease&) = delete;
  VmLease& operator=(const VmLease&) = delete;
  Vm& operator*() const { return *vm_; }

 private:
  std::shared_ptr<VmManager> manager_;
  std::shared_ptr<Vm> vm_;
};

// Counts a value up for the lifetime of a scope.
class InFlight final {
 public:
  explicit InFlight(unsigned& n) : n_(n) { ++n_; }
  ~InFlight() { --n_; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  unsigned& n_;
};

std::string tenant_of(const Exchange& ex) {
  auto it = ex.request().find("X-Vial-Tenant");
  return it == ex.request().end() ? std::string() : std::string(it->value());
}

// {path, content | content_base64, mode} entries written into the VM before the code runs.
struct UploadFile {
  std::string path;
  std::string data;
  unsigned mode = 0644;
};

std::vector<UploadFile> files_from_json(const json& files) {
  if (!files.is_array()) throw Error(ErrorKind::invalid_input, "field 'files': must be an array of {path, content}");
  std::vector<UploadFile> out;
  for (const json& f : files) {
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string()) {
      throw Error(ErrorKind::invalid_input, "field 'files': every entry needs a string 'path'");
    }
    UploadFile file;
    file.path = resolve_session_path(f["path"].get<std::string>());
    if (f.contains("content") == f.contains("content_base64")) {
      throw Error(ErrorKind::invalid_input, "field 'files': give each entry exactly one of content or content_base64");
    }
    if (f.contains("content")) {
      if (!f["content"].is_string()) throw Error(ErrorKind::invalid_input, "field 'files': content must be a string");
      file.data = f["content"].get<std::string>();
    } else {
      if (!f["content_base64"].is_string()) {
        throw Error(ErrorKind::invalid_input, "field 'files': content_base64 must be a string");
      }
      file.data = base64_decode(f["content_base64"].get<std::string>());
    }
    if (f.contains("mode")) {
      if (!f["mode"].is_number_unsigned() || f["mode"].get<unsigned>() > 07777) {
        throw Error(ErrorKind::invalid_input, "field 'files': mode must be a number up to 0o7777 (e.g. 420 for 0644)");
      }
      file.mode = f["mode"].get<unsigned>();
    }
    out.push_back(std::move(file));
  }
  return out;
}

unsigned mode_from_query(const Exchange& ex) {
  auto mode = ex.query("mode");
  if (!mode) return 0644;
  char* end = nullptr;
  unsigned long v = std::strtoul(mode->c_str(), &end, 8);
  if (mode->empty() || *end != '\0' || v > 07777) {
    throw Error(ErrorKind::invalid_input, "query 'mode': must be octal permissions such as 644 or 755");
  }
  return static_cast<unsigned>(v);
}

std::chrono::seconds idle_timeout_from(const json& body) {
  if (!body.contains("idle_timeout")) return kDefaultIdleTimeout;
  const json& v = body["idle_timeout"];
  if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > kMaxIdleTimeout.count()) {
    throw Error(ErrorKind::invalid_input, "field 'idle_timeout': must be a whole number of seconds between 1 and " +
                                              std::to_string(kMaxIdleTimeout.count()));
  }
  return std::chrono::seconds(v.get<int64_t>());
}

}  // namespace

Api::Api(std::shared_ptr<VmManager> manager, ApiSettings settings)
    : manager_(std::move(manager)), settings_(std::move(settings)), sessions_(manager_) {
  auto bind = [this](asio::awaitable<void> (Api::*fn)(Exchange&)) {
    return [this, fn](Exchange& ex) { return (this->*fn)(ex); };
  };
  router_.add({"GET", "/healthz", bind(&Api::healthz), /*needs_auth=*/false});
  router_.add({"GET", "/metrics", bind(&Api::metrics)});
  router_.add({"POST", "/v1/run", bind(&Api::run)});
  router_.add({"POST", "/v1/sessions", bind(&Api::create_session)});
  router_.add({"GET", "/v1/sessions", bind(&Api::list_sessions)});
  router_.add({"GET", "/v1/sessions/{id}", bind(&Api::get_session)});
  router_.add({"DELETE", "/v1/sessions/{id}", bind(&Api::delete_session)});
  router_.add({"POST", "/v1/sessions/{id}/exec", bind(&Api::session_exec)});
  router_.add({"GET", "/v1/sessions/{id}/files", bind(&Api::list_files)});
  router_.add({"PUT", "/v1/sessions/{id}/files/{path...}", bind(&Api::put_file), true, settings_.max_file_bytes});
  router_.add({"GET", "/v1/sessions/{id}/files/{path...}", bind(&Api::get_file)});
  router_.add({"GET", "/v1/machines", bind(&Api::list_machines)});
  router_.add({"POST", "/v1/machines", bind(&Api::create_machine)});
  router_.add({"GET", "/v1/machines/{name}", bind(&Api::get_machine)});
  router_.add({"DELETE", "/v1/machines/{name}", bind(&Api::delete_machine)});
  router_.add({"POST", "/v1/machines/{name}/start", bind(&Api::start_machine)});
  router_.add({"POST", "/v1/machines/{name}/stop", bind(&Api::stop_machine)});
  router_.add({"POST", "/v1/machines/{name}/exec", bind(&Api::machine_exec)});
}

void Api::refuse_while_draining() const {
  if (draining_) throw Error(ErrorKind::unavailable, "the server is shutting down; retry against a running server");
}

asio::awaitable<void> Api::healthz(Exchange& ex) {
  auto stats = manager_->stats();
  json pooled = json::object();
  for (const auto& [language, n] : stats.pooled) pooled[language] = n;
  json body = {{"status", draining_ ? "draining" : "ok"},
               {"version", VIAL_VERSION},
               {"accel", settings_.accel_name},
               {"vms", stats.live},
               {"sessions", sessions_.size()},
               {"warm_pool", pooled}};
  co_await ex.send_json(draining_ ? http::status::service_unavailable : http::status::ok, body);
}

asio::awaitable<void> Api::metrics(Exchange& ex) {
  auto stats = manager_->stats();
  EngineGauges g;
  g.live_vms = stats.live;
  g.pooled = stats.pooled;
  g.sessions = static_cast<unsigned>(sessions_.size());
  g.busy_sessions = sessions_.busy();
  g.runs_in_flight = runs_in_flight_;
  g.admission_rejections = stats.admission_rejections;
  co_await ex.send(http::status::ok, metrics_.render(g), "text/plain; version=0.0.4");
}

asio::awaitable<void> Api::respond_with_run(Exchange& ex, const std::string& language, const Executor& execute,
                                            std::chrono::steady_clock::time_point started) {
  const bool stream = ex.wants_ndjson();
  std::optional<RunResult> result;
  auto observe = [&](RunResult& r) {
    r.timing.total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    metrics_.exec_observed(language, r.timing.exec_ms / 1000.0);
  };
  if (!stream) {
    const ExecCallbacks no_streaming;
    auto outcome = co_await (capture(execute(no_streaming, true), result) || ex.client_gone());
    if (outcome.index() == 1) throw ClientGone();
    if (auto error = std::get<0>(outcome)) std::rethrow_exception(error);
    observe(*result);
    co_await ex.send_json(http::status::ok, run_result_to_json(*result, settings_.accel_name));
    co_return;
  }
  co_await ex.begin_stream();
  // {type, data} for UTF-8 chunks, else {type, data_base64}: a chunk is whatever the guest's
  // pipe gave, so it may even end inside a character.
  auto output_event = [&](const char* type, std::string_view chunk) {
    json event = {{"type", type}};
    put_bytes(event, "data", chunk);
    ex.queue_event(event);
  };
  ExecCallbacks events;
  events.on_stdout = [&](std::string_view chunk) { output_event("stdout", chunk); };
  events.on_stderr = [&](std::string_view chunk) { output_event("stderr", chunk); };
  auto produce = [&]() -> asio::awaitable<void> {
    try {
      RunResult r = co_await execute(events, false);
      observe(r);
      json done = run_result_to_json(r, settings_.accel_name, /*include_output=*/false);
      done["type"] = "result";
      ex.queue_event(done);
    } catch (const std::exception& e) {
      metrics_.error(error_reply(e).code);
      ex.queue_event({{"type", "error"}, {"error", error_body(error_reply(e))["error"]}});
    }
    ex.finish_stream();
  };
  CaptureSlot<void> done{};
  auto outcome = co_await (capture(produce() && ex.pump(), done) || ex.client_gone());
  if (outcome.index() == 1 || std::get<0>(outcome)) throw ClientGone();
}

asio::awaitable<void> Api::execute(Exchange& ex, Vm& vm, const RunRequest& request,
                                   std::chrono::steady_clock::time_point started) {
  Executor on_vm = [&](const ExecCallbacks& callbacks, bool collect) { return vm.execute(request, callbacks, collect); };
  co_await respond_with_run(ex, vm.language(), on_vm, started);
}

asio::awaitable<void> Api::run(Exchange& ex) {
  refuse_while_draining();
  const auto started = std::chrono::steady_clock::now();
  json body = ex.json_body();
  std::vector<UploadFile> files;
  if (body.contains("files")) {
    files = files_from_json(body["files"]);
    body.erase("files");
  }
  net::NetPolicy network;
  if (body.contains("network")) {
    network = net::policy_from_json(body["network"]);
    body.erase("network");
    if (!network.ports.empty()) {
      throw Error(ErrorKind::invalid_input, "network.ports: published ports are for sessions and machines, "
                                            "not one-shot runs");
    }
  }
  RunRequest request = run_request_from_json(body, manager_->settings().memory_mib);
  if (request.memory_mib != manager_->settings().memory_mib) {
    throw Error(ErrorKind::invalid_input, "field 'memory_mib': this server runs sandboxes with " +
                                              std::to_string(manager_->settings().memory_mib) +
                                              " MiB (set it with `vial serve --memory`)");
  }
  InFlight counted(runs_in_flight_);
  VmLease vm(manager_, co_await manager_->create_vm(request.language, tenant_of(ex), "run"));
  co_await (*vm).enable_network(network);
  for (const auto& f : files) co_await write_file(*(*vm).agent(), f.path, f.data, f.mode, false);
  co_await execute(ex, *vm, request, started);
}

nlohmann::json Api::session_json(const Session& s) const {
  return {{"id", s.id},
          {"language", s.language},
          {"vm", s.vm->name()},
          {"source", to_string(s.vm->source())},
          {"idle_timeout", s.idle_timeout.count()},
          {"created_at", iso8601(s.created_at)},
          {"execs", s.execs},
          {"busy", s.busy},
          {"alive", s.vm->alive()},
          {"network", net::to_json(s.network)}};
}

asio::awaitable<void> Api::create_session(Exchange& ex) {
  refuse_while_draining();
  json body = ex.json_body();
  check_known_fields(body, {"language", "memory_mib", "idle_timeout", "network"});
  if (!body.contains("language") || !body["language"].is_string()) {
    throw Error(ErrorKind::invalid_input, "field 'language': required (python, javascript or shell)");
  }
  std::string language = body["language"].get<std::string>();
  check_image_language(language);
  if (body.contains("memory_mib") &&
      (!body["memory_mib"].is_number_unsigned() || body["memory_mib"].get<unsigned>() != manager_->settings().memory_mib)) {
    throw Error(ErrorKind::invalid_input, "field 'memory_mib': this server runs sandboxes with " +
                                              std::to_string(manager_->settings().memory_mib) +
                                              " MiB (set it with `vial serve --memory`)");
  }
  net::NetPolicy network = body.contains("network") ? net::policy_from_json(body["network"]) : net::NetPolicy{};
  auto session = co_await sessions_.create(language, idle_timeout_from(body), tenant_of(ex), network);
  co_await ex.send_json(http::status::created, session_json(*session));
}

asio::awaitable<void> Api::list_sessions(Exchange& ex) {
  json list = json::array();
  for (const auto& s : sessions_.list()) list.push_back(session_json(*s));
  json body = {{"sessions", list}};
  co_await ex.send_json(http::status::ok, body);
}

asio::awaitable<void> Api::get_session(Exchange& ex) {
  co_await ex.send_json(http::status::ok, session_json(*sessions_.get(ex.param("id"))));
}

asio::awaitable<void> Api::delete_session(Exchange& ex) {
  auto session = sessions_.get(ex.param("id"));
  sessions_.remove(session->id);
  json body = {{"id", session->id}, {"deleted", true}};
  co_await ex.send_json(http::status::ok, body);
}

asio::awaitable<void> Api::session_exec(Exchange& ex) {
  refuse_while_draining();
  const auto started = std::chrono::steady_clock::now();
  auto session = sessions_.get(ex.param("id"));
  json body = ex.json_body();
  if (body.contains("language") && body["language"] != session->language) {
    throw Error(ErrorKind::invalid_input, "field 'language': this session runs " + session->language);
  }
  body["language"] = session->language;
  RunRequest request = run_request_from_json(body, manager_->settings().memory_mib);
  if (session->busy) {
    throw Error(ErrorKind::conflict, "session " + session->id + " is running code already; wait for it to finish");
  }
  session->busy = true;
  struct Release {
    SessionStore& store;
    Session& s;
    ~Release() {
      s.busy = false;
      store.touch(s);
    }
  } release{sessions_, *session};
  ++session->execs;
  try {
    co_await execute(ex, *session->vm, request, started);
  } catch (const ClientGone&) {
    // The program may still run in the guest: the session's VM goes with its client.
    log(spdlog::level::info, "client hung up during exec; deleting the session", {{"session", session->id}});
    sessions_.remove(session->id);
    throw;
  }
  if (!session->vm->alive()) {
    log(spdlog::level::warn, "the session's VM stopped; deleting the session", {{"session", session->id}});
    sessions_.remove(session->id);
  }
}

asio::awaitable<void> Api::put_file(Exchange& ex) {
  auto session = sessions_.get(ex.param("id"));
  std::string path = resolve_session_path(ex.param("path"));
  unsigned mode = mode_from_query(ex);
  co_await write_file(*session->vm->agent(), path, ex.request().body(), mode, false);
  sessions_.touch(*session);
  json body = {{"path", path}, {"size", ex.request().body().size()}};
  co_await ex.send_json(http::status::created, body);
}

asio::awaitable<void> Api::get_file(Exchange& ex) {
  auto session = sessions_.get(ex.param("id"));
  std::string path = resolve_session_path(ex.param("path"));
  std::string data = co_await read_file(*session->vm->agent(), path, settings_.max_file_bytes, false);
  sessions_.touch(*session);
  co_await ex.send(http::status::ok, std::move(data), "application/octet-stream");
}

asio::awaitable<void> Api::list_files(Exchange& ex) {
  auto session = sessions_.get(ex.param("id"));
  std::string dir = resolve_session_path(ex.query("dir").value_or("."));
  json entries = json::array();
  for (const auto& e : co_await list_dir(*session->vm->agent(), dir, false)) {
    entries.push_back({{"name", e.name}, {"type", e.type}, {"size", e.size}, {"mode", e.mode}, {"mtime", e.mtime}});
  }
  sessions_.touch(*session);
  json body = {{"dir", dir}, {"entries", entries}};
  co_await ex.send_json(http::status::ok, body);
}

}  // namespace vial::server
