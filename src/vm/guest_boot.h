// Bringing a VM to "agent ready": launch QEMU, connect to its agent socket, say hello — each
// wait bounded by a deadline that also notices QEMU dying, so a panic or a hung boot fails
// fast with the console tail in the message.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "util/error.h"
#include "vm/agent_client.h"
#include "vm/vm_process.h"

namespace vial {

// A VM whose agent has answered hello.
struct RunningVm {
  RunningVm() = default;
  RunningVm(RunningVm&&) = default;
  RunningVm& operator=(RunningVm&&) = default;
  ~RunningVm() { shut_down(); }
  // Closes the agent channel, then kills QEMU and removes its files. The close matters: the
  // client's reader may sit in a full request channel and would never see QEMU's EOF, keeping
  // itself (and the event loop) alive.
  void shut_down() {
    if (agent) agent->close();
    if (process) process->destroy();
  }

  std::unique_ptr<VmProcess> process;
  std::shared_ptr<AgentClient> agent;
};

// Where capture() leaves an operation's value (a flag for void operations).
template <typename T>
using CaptureSlot = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;

// Runs `op` and reports its exception instead of throwing it. Asio's `a || b` waits for the
// first operation to *succeed*, so an operation that fails must not throw inside it.
template <typename T>
asio::awaitable<std::exception_ptr> capture(asio::awaitable<T> op, CaptureSlot<T>& slot) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(op);
      slot = true;
    } else {
      slot.emplace(co_await std::move(op));
    }
  } catch (...) {
    co_return std::current_exception();
  }
  co_return nullptr;
}

// True if `error` is an AgentConnectionLost.
bool is_connection_lost(const std::exception_ptr& error);

// Runs `op` unless `deadline` passes (Error(on_timeout)) or QEMU exits (Error(boot_failed));
// both errors carry the console tail. What `op` throws is rethrown as it is.
template <typename T>
asio::awaitable<T> guarded(asio::awaitable<T> op, VmProcess& vm, std::chrono::milliseconds deadline,
                           const std::string& what, ErrorKind on_timeout) {
  using namespace boost::asio::experimental::awaitable_operators;
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex, deadline);
  ExitWatch exit_watch(ex, vm);
  CaptureSlot<T> slot{};
  auto outcome = co_await (capture(std::move(op), slot) || timer.async_wait(asio::use_awaitable) || exit_watch.wait());
  if (outcome.index() == 0) {
    if (auto error = std::get<0>(outcome)) {
      // A lost channel usually means QEMU is exiting (a panic): if it is, say so, with the console.
      if (is_connection_lost(error)) {
        asio::steady_timer grace(ex, std::chrono::seconds(2));
        auto exited = co_await (exit_watch.wait() || grace.async_wait(asio::use_awaitable));
        if (exited.index() == 0) throw Error(ErrorKind::boot_failed, vm.describe_failure(what + ": the VM stopped"));
      }
      std::rethrow_exception(error);
    }
    if constexpr (std::is_void_v<T>) {
      co_return;
    } else {
      co_return std::move(*slot);
    }
  }
  if (outcome.index() == 1) {
    auto secs = (deadline.count() + 999) / 1000;
    throw Error(on_timeout, vm.describe_failure(what + ": no answer within " + std::to_string(secs) + " s"));
  }
  throw Error(ErrorKind::boot_failed, vm.describe_failure(what + ": the VM stopped"));
}

// Connects to a unix socket QEMU is about to create, retrying every 2 ms (bound it with guarded()).
asio::awaitable<AgentClient::Socket> connect_when_listening(std::filesystem::path socket_path);

// Connects to the VM's agent socket and completes hello before `deadline`.
asio::awaitable<std::shared_ptr<AgentClient>> connect_agent(VmProcess& vm, std::chrono::steady_clock::time_point deadline);

// Launches QEMU for `config` and waits for its agent (see VmProcess::launch for the arguments).
asio::awaitable<RunningVm> boot_vm(const VmConfig& config, std::filesystem::path vm_dir,
                                   std::vector<std::filesystem::path> owned_files,
                                   std::chrono::milliseconds boot_timeout, std::vector<int> pass_fds);

// Time left until `deadline`, never negative.
std::chrono::milliseconds time_left(std::chrono::steady_clock::time_point deadline);

}  // namespace vial
