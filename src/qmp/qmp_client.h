// QMP (the QEMU Machine Protocol) over a unix socket, for qemu-storage-daemon and qemu-system.
// Replies are matched to commands by id, never by position; asynchronous events go to the
// waiters that asked for them. IMPORTANT: a client and everything awaiting it must run on one
// single-threaded executor (callers from other threads go through a facade, see StorageDaemon).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace vial {

namespace asio = boost::asio;

// A command QEMU refused: QMP's error `class` (e.g. "GenericError") and `desc`.
class QmpError final : public Error {
 public:
  QmpError(std::string error_class, const std::string& desc)
      : Error(ErrorKind::internal, desc), error_class_(std::move(error_class)) {}
  const std::string& error_class() const { return error_class_; }

 private:
  std::string error_class_;
};

class QmpClient final : public std::enable_shared_from_this<QmpClient> {
 public:
  using Socket = asio::local::stream_protocol::socket;
  using EventFilter = std::function<bool(const nlohmann::json& data)>;
  class EventWaiter;

  static constexpr std::chrono::milliseconds kDefaultDeadline{30000};

  // Connects to a listening QMP socket, reads the greeting and leaves negotiation mode
  // (`qmp_capabilities`). Throws boost::system::system_error when the socket can't be reached
  // (callers retry while QEMU starts) and Error on a protocol failure.
  static asio::awaitable<std::shared_ptr<QmpClient>> connect(std::filesystem::path socket_path,
                                                             std::chrono::milliseconds deadline = kDefaultDeadline);
  // The same on a socket that is already connected (e.g. one end of a socketpair QEMU inherited).
  static asio::awaitable<std::shared_ptr<QmpClient>> attach(Socket socket,
                                                            std::chrono::milliseconds deadline = kDefaultDeadline);

  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;
  ~QmpClient();

  // Runs one command and returns its "return" value. Throws QmpError when QEMU answers with
  // an error, Error(timeout) after `deadline`, Error(internal) when the connection is lost.
  [[nodiscard]] asio::awaitable<nlohmann::json> execute(std::string command,
                                                         nlohmann::json arguments = nullptr,
                                                         std::chrono::milliseconds deadline = kDefaultDeadline);

  // Registers interest in the next `event` whose data passes `filter` *now*, so an event
  // caused by a command sent afterwards can't be missed. Await it with EventWaiter::wait().
  [[nodiscard]] std::shared_ptr<EventWaiter> watch_event(std::string event, EventFilter filter = {});
  // watch_event + wait: only for events that no command of the caller triggers.
  [[nodiscard]] asio::awaitable<nlohmann::json> wait_event(std::string event, EventFilter filter = {},
                                                           std::chrono::milliseconds deadline = kDefaultDeadline);

  const nlohmann::json& greeting() const { return greeting_; }
  bool connected() const { return !lost_; }
  // Closes the socket; pending commands and waiters fail with "connection lost".
  void close();


 private:
  using JsonChannel = asio::experimental::channel<void(boost::system::error_code, nlohmann::json)>;
  struct Watch {
    std::string event;
    EventFilter filter;
    std::shared_ptr<JsonChannel> channel;
  };

  explicit QmpClient(Socket socket);
  asio::awaitable<nlohmann::json> read_message();
  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  void dispatch(nlohmann::json message);
  void fail_all(const std::string& reason);
  // Closes the socket and fails everything pending with `reason`.
  void abandon(const std::string& reason);
  // Waits for one value on `channel` or throws (timeout, lost connection).
  asio::awaitable<nlohmann::json> receive(JsonChannel& channel, std::chrono::milliseconds deadline,
                                          const std::string& what);

  Socket socket_;
  std::string inbuf_;
  std::string outgoing_;
  bool writing_ = false;
  bool lost_ = false;
  std::string lost_reason_;
  nlohmann::json greeting_;
  uint64_t next_id_ = 1;
  std::map<std::string, std::shared_ptr<JsonChannel>> pending_;
  std::list<Watch> watches_;

  friend class EventWaiter;
};

// One registered event interest; unregisters itself when destroyed.
class QmpClient::EventWaiter final {
 public:
  EventWaiter(std::weak_ptr<QmpClient> client, std::list<Watch>::iterator it) : client_(std::move(client)), it_(it) {}
  EventWaiter(const EventWaiter&) = delete;
  EventWaiter& operator=(const EventWaiter&) = delete;
  ~EventWaiter();
  // The event's "data" object (the whole message is under "event"/"timestamp" too).
  [[nodiscard]] asio::awaitable<nlohmann::json> wait(std::chrono::milliseconds deadline = kDefaultDeadline);

 private:
  std::weak_ptr<QmpClient> client_;
  std::list<Watch>::iterator it_;
};

}  // namespace vial
