#include "server/sessions.h"

#include <sys/random.h>

#include <ctime>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>

#include "agent/protocol.h"
#include "server/log.h"
#include "util/error.h"

namespace vial::server {

std::string random_id() {
  unsigned char bytes[16];
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) throw_errno("getrandom", errno);
  return agent::to_hex(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
}

std::string iso8601(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

asio::awaitable<std::shared_ptr<Session>> SessionStore::create(const std::string& language,
                                                               std::chrono::seconds idle_timeout,
                                                               const std::string& tenant, const net::NetPolicy& network) {
  auto session = std::make_shared<Session>();
  session->id = random_id();
  session->language = language;
  session->idle_timeout = idle_timeout;
  session->network = network;
  auto listeners = net::bind_published_ports(co_await asio::this_coro::executor, session->network.ports);
  session->vm = co_await manager_->create_vm(language, tenant, "s" + session->id.substr(0, 8));
  std::exception_ptr failed;
  try {
    co_await session->vm->enable_network(session->network, &listeners);
  } catch (...) {
    failed = std::current_exception();
  }
  if (failed) {
    manager_->destroy_vm(session->vm);
    std::rethrow_exception(failed);
  }
  session->created_at = std::chrono::system_clock::now();
  touch(*session);
  sessions_[session->id] = session;
  log(spdlog::level::info, "session created",
      {{"session", session->id}, {"language", language}, {"vm", session->vm->name()},
       {"source", to_string(session->vm->source())}});
  co_return session;
}

std::shared_ptr<Session> SessionStore::get(const std::string& id) const {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    // Ids are 32 hex characters: a longer one is cut, not echoed whole.
    const std::string shown = id.size() > 40 ? id.substr(0, 40) + "..." : id;
    throw Error(ErrorKind::not_found, "no session '" + shown + "': it was deleted, reaped after its idle timeout, "
                                      "or never existed; create one with POST /v1/sessions");
  }
  return it->second;
}

void SessionStore::remove(const std::string& id) {
  auto session = get(id);
  sessions_.erase(id);
  manager_->destroy_vm(session->vm);
  log(spdlog::level::info, "session deleted", {{"session", id}, {"execs", session->execs}});
}

std::vector<std::shared_ptr<Session>> SessionStore::list() const {
  std::vector<std::shared_ptr<Session>> out;
  for (const auto& [id, s] : sessions_) out.push_back(s);
  return out;
}

unsigned SessionStore::busy() const {
  unsigned n = 0;
  for (const auto& [id, s] : sessions_) n += s->busy ? 1 : 0;
  return n;
}

asio::awaitable<void> SessionStore::reap_loop() {
  reap_timer_ = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
  auto timer = reap_timer_;  // keeps the timer alive if the store goes first
  while (!stopped_) {
    timer->expires_after(std::chrono::seconds(1));
    boost::system::error_code ec;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopped_) break;
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::string> expired;
    for (const auto& [id, s] : sessions_) {
      if (!s->busy && now - s->last_used >= s->idle_timeout) expired.push_back(id);
    }
    for (const auto& id : expired) {
      log(spdlog::level::info, "session reaped after its idle timeout", {{"session", id}});
      remove(id);
    }
  }
}

void SessionStore::stop_reaping() {
  stopped_ = true;
  if (reap_timer_) reap_timer_->cancel();
}

void SessionStore::destroy_all() {
  for (const auto& [id, s] : sessions_) manager_->destroy_vm(s->vm);
  sessions_.clear();
}

}  // namespace vial::server
