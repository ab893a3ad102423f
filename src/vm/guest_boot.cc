#include "vm/guest_boot.h"

#include <boost/asio/redirect_error.hpp>

namespace vial {

bool is_connection_lost(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const AgentConnectionLost&) {
    return true;
  } catch (...) {
    return false;
  }
}

std::chrono::milliseconds time_left(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

asio::awaitable<AgentClient::Socket> connect_when_listening(std::filesystem::path socket_path) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer pause(ex);
  for (;;) {
    AgentClient::Socket socket(ex);
    boost::system::error_code ec;
    co_await socket.async_connect({socket_path.string()}, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) co_return socket;
    pause.expires_after(std::chrono::milliseconds(2));
    co_await pause.async_wait(asio::use_awaitable);
  }
}

asio::awaitable<std::shared_ptr<AgentClient>> connect_agent(VmProcess& vm,
                                                            std::chrono::steady_clock::time_point deadline) {
  auto socket = co_await guarded(connect_when_listening(vm.config().agent_socket), vm, time_left(deadline),
                                 "waiting for QEMU to start", ErrorKind::boot_failed);
  auto agent = AgentClient::create(std::move(socket));
  co_await guarded(agent->hello(), vm, time_left(deadline), "waiting for the guest agent", ErrorKind::boot_failed);
  co_return agent;
}

asio::awaitable<RunningVm> boot_vm(const VmConfig& config, std::filesystem::path vm_dir,
                                   std::vector<std::filesystem::path> owned_files,
                                   std::chrono::milliseconds boot_timeout, std::vector<int> pass_fds) {
  const auto deadline = std::chrono::steady_clock::now() + boot_timeout;
  RunningVm vm;
  vm.process = VmProcess::launch(config, std::move(vm_dir), std::move(owned_files), std::move(pass_fds));
  vm.agent = co_await connect_agent(*vm.process, deadline);
  co_return vm;
}

}  // namespace vial
