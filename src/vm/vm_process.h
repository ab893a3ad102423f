// Owns one QEMU process and every file made for it. Whatever happens (success, error,
// exception, Ctrl-C), destroying a VmProcess kills and reaps QEMU and removes its files.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "util/process.h"
#include "vm/qemu_command.h"

namespace vial {

// Inside a VM's folder, for the orphan reaper of a later vial: QEMU's pid, and the owning
// process as "pid start_time" (so a reused pid can't pass for the owner).
inline constexpr const char* kQemuPidFile = "qemu.pid";
inline constexpr const char* kOwnerFile = "owner";

// Write those two files (VmProcess::launch does; exposed for tests).
void write_owner(const std::filesystem::path& vm_dir);
void write_qemu_pid(const std::filesystem::path& vm_dir, pid_t pid);

class VmProcess final {
 public:
  // Starts QEMU for `config`. `vm_dir` holds the VM's sockets and logs and is removed with it;
  // `owned_files` (e.g. its overlay disk) are removed too. `pass_fds` reach QEMU as fd 3, 4...
  // Throws Error when QEMU can't start.
  static std::unique_ptr<VmProcess> launch(const VmConfig& config, std::filesystem::path vm_dir,
                                           std::vector<std::filesystem::path> owned_files,
                                           std::vector<int> pass_fds = {});

  VmProcess(const VmProcess&) = delete;
  VmProcess& operator=(const VmProcess&) = delete;
  ~VmProcess();

  const VmConfig& config() const { return config_; }
  pid_t pid() const { return qemu_.pid(); }
  int pidfd() const { return qemu_.pidfd(); }
  bool running() { return !qemu_.try_wait().has_value(); }

  // The last `lines` lines of the guest console and of QEMU's own stderr, for error messages.
  std::string console_tail(size_t lines = 20) const;
  std::string qemu_log_tail(size_t lines = 10) const;
  // A one-paragraph explanation of why the VM ended or never became ready.
  std::string describe_failure(const std::string& what);

  // Kills QEMU (no guest cooperation needed: the VM is throwaway) and removes its files.
  void destroy();
  // Blocks until QEMU exits by itself (after a QMP `quit`); returns its wait status.
  int wait_exit() { return qemu_.wait(); }

 private:
  VmProcess(VmConfig config, std::filesystem::path vm_dir, std::vector<std::filesystem::path> owned);
  VmConfig config_;
  std::filesystem::path vm_dir_;
  std::vector<std::filesystem::path> owned_files_;
  Child qemu_;
};

// The first line of a text file containing `needle` (empty if none).
std::string first_line_with(const std::filesystem::path& path, const std::string& needle);

// Last `lines` lines of a text file (empty if unreadable); non-printable bytes become '?'.
std::string tail_file(const std::filesystem::path& path, size_t lines);

// Completes once QEMU has exited: an Asio descriptor on a dup of its pidfd. The destructor
// takes the dup out of epoll before closing it: Asio skips that for descriptors it closes, and
// as the original pidfd keeps the file open, the stale entry would fire at QEMU's exit into
// whatever descriptor reuses Asio's bookkeeping. wait() also checks the pidfd on each wake-up.
class ExitWatch final {
 public:
  ExitWatch(const boost::asio::any_io_executor& executor, const VmProcess& vm);
  ~ExitWatch();
  ExitWatch(const ExitWatch&) = delete;
  ExitWatch& operator=(const ExitWatch&) = delete;
  boost::asio::awaitable<void> wait();

 private:
  boost::asio::posix::stream_descriptor descriptor_;
};

}  // namespace vial
