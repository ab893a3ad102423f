#include "storage/storage_daemon.h"

#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "qmp/qmp_client.h"
#include "storage/qcow2.h"
#include "util/paths.h"
#include "util/process.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace boost::asio::experimental::awaitable_operators;

namespace vial {
namespace {

constexpr std::chrono::seconds kStartDeadline{10};
constexpr std::chrono::milliseconds kConnectRetry{1};
// A healthy daemon answers the handshake in a millisecond; should one ever not, start() gives
// it this long and then tries a fresh daemon.
constexpr std::chrono::seconds kHandshakeDeadline{3};
constexpr int kStartAttempts = 3;

// QEMU option values escape a comma by doubling it.
std::string qemu_opt_escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

fs::path make_run_dir(const fs::path& parent) {
  ensure_private_dir(parent);
  std::string templ = (parent / "storage-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw_errno("cannot create a run dir in " + parent.string(), errno);
  return templ;
}

std::string read_tail(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  constexpr size_t kTail = 2000;
  return text.size() > kTail ? text.substr(text.size() - kTail) : text;
}

// QMP arguments are built in plain functions: GCC 12 rejects braced JSON literals with
// string literals inside coroutines ("array used as initializer").
std::string json_string(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The error a concluded job reports in `query-jobs`, empty when it succeeded.
std::string job_error(const json& jobs, const std::string& job_id) {
  for (const json& job : jobs) {
    if (json_string(job, "id") == job_id) return json_string(job, "error");
  }
  return {};
}

json create_args(const std::string& job_id, json options) { return {{"job-id", job_id}, {"options", std::move(options)}}; }
json id_args(const std::string& job_id) { return {{"id", job_id}}; }
json file_options(const fs::path& target) { return {{"driver", "file"}, {"filename", target.string()}, {"size", 0}}; }
// The qcow2 job opens its file inline and closes it before it concludes: no named node to add
// and delete, two QMP commands (~0.3 ms each) fewer. no-flush: QEMU would fsync the new image
// (milliseconds); an overlay is scratch space that a crash makes worthless anyway, and the
// pristine cache syncs its own copy.
json qcow2_options(const fs::path& target, const BaseImage& base) {
  return {{"driver", "qcow2"},
          {"file", {{"driver", "file"}, {"filename", target.string()}, {"cache", {{"no-flush", true}}}}},
          {"size", base.virtual_size},
          {"backing-file", base.path.string()},
          {"backing-fmt", "qcow2"}};
}

bool is_job_end(const json& data, const std::string& job_id) {
  const std::string status = json_string(data, "status");
  return json_string(data, "id") == job_id && (status == "aborting" || status == "concluded");
}

// One blockdev-create job: start it and wait until it concludes. `previous`, a concluded job,
// is dismissed in the same round trip (QMP runs commands in order). A failed job passes through
// "aborting" first; only then is `query-jobs` asked for its error. The caller dismisses a job
// that succeeded.
asio::awaitable<void> run_create_job(QmpClient& qmp, std::string job_id, json options, std::string previous) {
  auto ended = qmp.watch_event("JOB_STATUS_CHANGE", [job_id](const json& d) { return is_job_end(d, job_id); });
  if (previous.empty()) {
    co_await qmp.execute("blockdev-create", create_args(job_id, std::move(options)));
  } else {
    co_await (qmp.execute("job-dismiss", id_args(previous)) &&
              qmp.execute("blockdev-create", create_args(job_id, std::move(options))));
  }
  const json first = co_await ended->wait();
  if (json_string(first, "status") == "concluded") co_return;
  co_await ended->wait();  // concluded
  const json jobs = co_await qmp.execute("query-jobs");
  const std::string error = job_error(jobs, job_id);
  co_await qmp.execute("job-dismiss", id_args(job_id));
  throw StorageDaemonError(error.empty() ? "job " + job_id + " failed" : error);
}

// The file job makes the empty file, the qcow2 job formats it. Sets `file_made` once the
// target file exists, so the caller knows to remove it on failure.
asio::awaitable<void> create_sequence(std::shared_ptr<QmpClient> qmp, BaseImage base, fs::path target,
                                      std::string tag, bool* file_made) {
  const std::string file_job = "vial-file-" + tag;
  const std::string qcow2_job = "vial-qcow2-" + tag;
  co_await run_create_job(*qmp, file_job, file_options(target), {});
  *file_made = true;
  co_await run_create_job(*qmp, qcow2_job, qcow2_options(target, base), file_job);
  co_await qmp->execute("job-dismiss", id_args(qcow2_job));
}

}  // namespace

// The live daemon: process, run dir, and the io_context thread its QMP client lives on.
class StorageDaemon::Running final {
 public:
  explicit Running(const fs::path& parent) : dir(make_run_dir(parent)), socket(dir / "qmp.sock") {}
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;

  ~Running() {
    // Close the client and stop the loop on its own thread; coroutines still suspended (a
    // failed start, a read loop) are destroyed with the io_context, after the join.
    asio::post(io, [this] {
      if (qmp) qmp->close();
      io.stop();
    });
    if (thread.joinable()) thread.join();
    qmp.reset();
    child.kill_and_reap();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  void launch() {
    SpawnOptions opts;
    opts.output_path = dir / "daemon.log";
    // wait=on: the daemon accepts us before it sets up its monitor. With wait=off a client that
    // connects while the monitor moves its I/O to the monitor thread (QEMU 7.2) ends up read by
    // two threads at once: QEMU sees torn JSON ("JSON parse error") and never answers.
    child = Child::spawn({"qemu-storage-daemon", "--chardev",
                          "socket,id=qmp,path=" + qemu_opt_escape(socket.string()) + ",server=on,wait=on",
                          "--monitor", "chardev=qmp"},
                         opts);
    thread = std::thread([this] { io.run(); });
    qmp = call(connect());
  }

  // Runs `op` on the io thread and waits for it; rethrows what it threw.
  template <typename T>
  T call(asio::awaitable<T> op) {
    return asio::co_spawn(io, std::move(op), asio::use_future).get();
  }

  const fs::path dir;
  const fs::path socket;
  Child child;
  asio::io_context io;
  // Keeps run() going while no command is in flight.
  asio::executor_work_guard<asio::io_context::executor_type> guard = asio::make_work_guard(io);
  std::thread thread;
  std::shared_ptr<QmpClient> qmp;
  unsigned next_tag = 0;

 private:
  // The daemon creates its socket a few ms after it starts: retry until it answers.
  asio::awaitable<std::shared_ptr<QmpClient>> connect() {
    asio::steady_timer pause(co_await asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + kStartDeadline;
    for (;;) {
      try {
        co_return co_await QmpClient::connect(socket, kHandshakeDeadline);
      } catch (const boost::system::system_error&) {
      }
      if (child.try_wait()) {
        throw StorageDaemonError("qemu-storage-daemon exited at start: " + read_tail(dir / "daemon.log"), {},
                                 ErrorKind::unavailable);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw StorageDaemonError("qemu-storage-daemon did not open its QMP socket within " +
                                     std::to_string(kStartDeadline.count()) + " s",
                                 {}, ErrorKind::timeout);
      }
      pause.expires_after(kConnectRetry);
      co_await pause.async_wait(asio::use_awaitable);
    }
  }
};

StorageDaemon::StorageDaemon(fs::path run_parent)
    : run_parent_(run_parent.empty() ? run_dir() : fs::absolute(run_parent)) {}

StorageDaemon::~StorageDaemon() { stop(); }

void StorageDaemon::start() {
  std::lock_guard lock(mutex_);
  if (running_) return;
  for (int attempt = 1;; ++attempt) {
    auto running = std::make_unique<Running>(run_parent_);
    try {
      running->launch();
      running_ = std::move(running);
      return;
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::timeout || attempt == kStartAttempts) throw;
    }
  }
}

void StorageDaemon::stop() noexcept {
  std::lock_guard lock(mutex_);
  running_.reset();
}

bool StorageDaemon::started() const {
  std::lock_guard lock(mutex_);
  return running_ != nullptr;
}

pid_t StorageDaemon::pid() const {
  std::lock_guard lock(mutex_);
  return running_ ? running_->child.pid() : 0;
}

fs::path StorageDaemon::socket_path() const {
  std::lock_guard lock(mutex_);
  return running_ ? running_->socket : fs::path();
}

void StorageDaemon::create_overlay(const fs::path& base, const fs::path& target) {
  std::unique_lock lock(mutex_);
  if (!running_) {
    throw StorageDaemonError("storage daemon not started: call start() before create_overlay()", {},
                             ErrorKind::internal);
  }
  const BaseImage image = inspect_base_image(base);
  const fs::path target_abs = fs::absolute(target).lexically_normal();
  bool file_made = false;
  auto fail = [&](const std::string& why, const std::string& error_class) -> StorageDaemonError {
    std::error_code ec;
    if (file_made) fs::remove(target_abs, ec);
    return StorageDaemonError("Failed to create overlay " + target_abs.string() + ": " + why, error_class);
  };
  try {
    running_->call(create_sequence(running_->qmp, image, target_abs, std::to_string(running_->next_tag++),
                                   &file_made));
  } catch (const QmpError& e) {
    throw fail(e.what(), e.error_class());
  } catch (const StorageDaemonError& e) {
    throw fail(e.what(), e.error_class());
  } catch (const std::exception& e) {
    throw fail(e.what(), {});
  }
}

}  // namespace vial
