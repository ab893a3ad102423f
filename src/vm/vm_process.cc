#include "vm/vm_process.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <boost/asio/use_awaitable.hpp>

#include "util/error.h"

namespace fs = std::filesystem;

namespace vial {

std::string tail_file(const fs::path& path, size_t lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff start = size > 16384 ? size - 16384 : 0;
  in.seekg(start);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::erase(data, '\r');  // the serial console writes CRLF
  for (char& ch : data) {
    if (ch != '\n' && ch != '\t' && (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f)) ch = '?';
  }
  while (!data.empty() && data.back() == '\n') data.pop_back();
  size_t pos = data.size();
  for (size_t n = 0; n < lines && pos != std::string::npos && pos > 0; ++n) {
    pos = data.rfind('\n', pos - 1);
  }
  return (pos == std::string::npos || pos == 0) ? data : data.substr(pos + 1);
}

void write_owner(const fs::path& vm_dir) {
  std::ofstream(vm_dir / kOwnerFile) << ::getpid() << " " << process_start_time(::getpid()) << "\n";
}

void write_qemu_pid(const fs::path& vm_dir, pid_t pid) { std::ofstream(vm_dir / kQemuPidFile) << pid << "\n"; }

std::string first_line_with(const fs::path& path, const std::string& needle) {
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) {
      std::erase(line, '\r');
      return line;
    }
  }
  return {};
}

VmProcess::VmProcess(VmConfig config, fs::path vm_dir, std::vector<fs::path> owned)
    : config_(std::move(config)), vm_dir_(std::move(vm_dir)), owned_files_(std::move(owned)) {}

std::unique_ptr<VmProcess> VmProcess::launch(const VmConfig& config, fs::path vm_dir,
                                             std::vector<fs::path> owned_files, std::vector<int> pass_fds) {
  std::unique_ptr<VmProcess> vm(new VmProcess(config, std::move(vm_dir), std::move(owned_files)));
  write_owner(vm->vm_dir_);
  std::vector<std::string> argv = build_qemu_argv(config);
  SpawnOptions opts;
  opts.output_path = vm->vm_dir_ / "qemu.log";
  opts.pass_fds = std::move(pass_fds);
  vm->qemu_ = Child::spawn(argv, opts);
  write_qemu_pid(vm->vm_dir_, vm->qemu_.pid());
  return vm;
}

VmProcess::~VmProcess() { destroy(); }

void VmProcess::destroy() {
  qemu_.kill_and_reap();
  std::error_code ec;
  for (const auto& f : owned_files_) fs::remove(f, ec);
  owned_files_.clear();
  if (!vm_dir_.empty()) fs::remove_all(vm_dir_, ec);
  vm_dir_.clear();
}

std::string VmProcess::console_tail(size_t lines) const { return tail_file(config_.console_log, lines); }

std::string VmProcess::qemu_log_tail(size_t lines) const { return tail_file(vm_dir_ / "qemu.log", lines); }

std::string VmProcess::describe_failure(const std::string& what) {
  std::ostringstream msg;
  msg << what;
  if (auto status = qemu_.try_wait()) {
    if (WIFEXITED(*status)) {
      msg << " (QEMU exited with status " << WEXITSTATUS(*status) << ")";
    } else if (WIFSIGNALED(*status)) {
      msg << " (QEMU killed by signal " << WTERMSIG(*status) << ")";
    }
  }
  if (std::string q = qemu_log_tail(); !q.empty()) msg << "\n--- qemu ---\n" << q;
  std::string c = console_tail();
  // A panic's reason comes before its backtrace, which fills the tail: name it first.
  std::string panic = first_line_with(config_.console_log, "Kernel panic");
  if (!panic.empty() && c.find(panic) == std::string::npos) msg << "\n" << panic;
  msg << "\n--- guest console (last lines) ---\n" << (c.empty() ? "(empty: the kernel printed nothing)" : c);
  return msg.str();
}

ExitWatch::ExitWatch(const boost::asio::any_io_executor& executor, const VmProcess& vm) : descriptor_(executor) {
  int fd = ::dup(vm.pidfd());
  if (fd < 0) throw_errno("dup pidfd", errno);
  descriptor_.assign(fd);
}

ExitWatch::~ExitWatch() {
  if (descriptor_.is_open()) ::close(descriptor_.release());
}

boost::asio::awaitable<void> ExitWatch::wait() {
  for (;;) {
    co_await descriptor_.async_wait(boost::asio::posix::descriptor_base::wait_read, boost::asio::use_awaitable);
    // Readiness can be stale (an event of an fd whose Asio state this descriptor reuses; seen
    // with many VMs starting at once): only the pidfd itself says QEMU exited.
    pollfd p{descriptor_.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) co_return;
  }
}

}  // namespace vial
