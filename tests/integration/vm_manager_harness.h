// The VmManager test fixture and helpers: a private VIAL_HOME (VialHomeTest), TCG settings,
// an event loop with a watchdog, and small coroutine helpers. Shared by vm_manager_test.cc and
// the engine feature tests (guest files, notebook sessions).
#pragma once

#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include "cli_harness.h"
#include "sandbox/runner.h"
#include "sandbox/vm_manager.h"
#include "util/error.h"
#include "util/event_loop.h"
#include "vm/accel.h"

namespace fs = std::filesystem;
namespace asio = boost::asio;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace vial::test {

// A fatal check inside a coroutine (ASSERT_* would `return`, which a coroutine can't).
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};
inline void need(bool ok, const std::string& what) {
  if (!ok) throw Fatal(what);
}

inline double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

inline asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

// Polls `pred` every 50 ms (on the event loop, so the engine keeps running) until it holds or
// `timeout` passes; returns its last value.
inline asio::awaitable<bool> poll_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (!pred()) {
    if (Clock::now() >= end) co_return pred();
    co_await sleep_for(50ms);
  }
  co_return true;
}

inline asio::awaitable<RunResult> exec(Vm& vm, std::string code, std::chrono::seconds timeout = 60s) {
  RunRequest request;
  request.language = vm.language();
  request.code = std::move(code);
  request.timeout = timeout;
  ExecCallbacks none;
  co_return co_await vm.execute(request, none);
}

inline std::string describe(const RunResult& r) {
  std::ostringstream s;
  s << "exit_code=" << r.exit_code << " timed_out=" << r.timed_out << " source=" << r.source
    << "\n--- stdout ---\n" << r.stdout_data.substr(0, 2000) << "\n--- stderr ---\n" << r.stderr_data.substr(0, 2000);
  return s.str();
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Every path under `dir` (symlinks not followed), for failure messages.
inline std::string tree(const fs::path& dir) {
  std::string out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    out += "  " + it->path().string() + "\n";
  }
  return out;
}

// Stops the manager however the test body leaves (its pool fillers only end after stop()).
struct StopOnExit {
  std::shared_ptr<VmManager> manager;
  explicit StopOnExit(std::shared_ptr<VmManager> m) : manager(std::move(m)) {}
  StopOnExit(StopOnExit&& other) noexcept : manager(std::move(other.manager)) {}
  StopOnExit(const StopOnExit&) = delete;
  StopOnExit& operator=(const StopOnExit&) = delete;
  ~StopOnExit() {
    if (manager) manager->stop();
  }
};

// A started manager with `s`, stopped when the returned guard goes out of scope.
inline asio::awaitable<StopOnExit> start_manager(VmManagerSettings s) {
  StopOnExit guard{VmManager::create(co_await asio::this_coro::executor, std::move(s))};
  co_await guard.manager->start();
  co_return guard;
}

class VmManagerTest : public VialHomeTest {
 protected:
  void SetUp() override {
    VialHomeTest::SetUp();
    if (HasFatalFailure()) return;
    if (const char* old = std::getenv("VIAL_HOME")) saved_home_ = old;
    ::setenv("VIAL_HOME", home().c_str(), 1);
  }

  void TearDown() override {
    if (saved_home_) {
      ::setenv("VIAL_HOME", saved_home_->c_str(), 1);
    } else {
      ::unsetenv("VIAL_HOME");
    }
    VialHomeTest::TearDown();
  }

  // TCG unless VIAL_ACCEL=kvm: the tests must pass without KVM.
  static VmManagerSettings settings() {
    VmManagerSettings s;
    const char* forced = std::getenv("VIAL_ACCEL");
    if (forced && std::string(forced) == "kvm") {
      s.accel = Accel{AccelKind::kvm, "tests (VIAL_ACCEL=kvm)"};
    } else {
      s.accel = Accel{AccelKind::tcg, "tests"};
    }
    s.max_concurrent_vms = 2;
    s.admission_timeout = 120s;
    return s;
  }

  std::string qemu_needle() const { return home().string() + "/"; }

  // Runs `body` on a fresh event loop; fails the test (instead of hanging) past `limit`.
  void run_engine(const std::function<asio::awaitable<void>()>& body, std::chrono::seconds limit = 300s) {
    std::exception_ptr failure;
    bool finished = false;
    try {
      run_with_signals([&]() -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        // `||` waits for the first *success*: catch here so a throwing body ends the race too.
        auto guarded_body = [&]() -> asio::awaitable<void> {
          try {
            co_await body();
          } catch (...) {
            failure = std::current_exception();
          }
          finished = true;
        };
        asio::steady_timer watchdog(co_await asio::this_coro::executor, limit);
        co_await (guarded_body() || watchdog.async_wait(asio::use_awaitable));
      });
    } catch (const std::exception& e) {
      ADD_FAILURE() << "run_with_signals threw: " << e.what();
      return;
    }
    if (!finished) {
      ADD_FAILURE() << "the test body did not finish within " << limit.count() << " s";
      return;
    }
    if (!failure) return;
    try {
      std::rethrow_exception(failure);
    } catch (const Fatal& e) {
      ADD_FAILURE() << e.what();
    } catch (const Error& e) {
      ADD_FAILURE() << "vial error (" << to_string(e.kind()) << "): " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "exception: " << e.what();
    }
  }

 private:
  std::optional<std::string> saved_home_;
};

}  // namespace vial::test
