#include "util/event_loop.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

namespace vial {

void run_with_signals(const std::function<boost::asio::awaitable<void>()>& task) {
  std::exception_ptr failure;
  bool interrupted = false;
  {
    boost::asio::io_context io;
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      interrupted = true;
      io.stop();
    });
    boost::asio::co_spawn(io, task(), [&](std::exception_ptr e) {
      failure = e;
      signals.cancel();
    });
    io.run();
  }  // destroying io destroys an unfinished coroutine, and with it every VM it owns
  if (interrupted) throw Interrupted();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace vial
