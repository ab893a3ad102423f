// Small syscall helpers shared by the guest agent's modules.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace vial::guest {

// Monotonic clock in milliseconds.
int64_t now_ms();
// Writes the whole string to a file (O_WRONLY|O_TRUNC, optional O_CREAT). Returns errno or 0.
int write_file(const std::string& path, std::string_view data, bool create = false, int mode = 0644);
// Reads a small file; false when it can't be opened.
bool read_file(const std::string& path, std::string& out);
bool set_nonblock(int fd);
// Sends one message with `nfds` (at most 8) fds attached (SCM_RIGHTS) on a SEQPACKET socket.
// False with errno set when it was not sent whole.
bool send_with_fds(int sock, std::string_view msg, const int* fds, int nfds);
// Removes a directory tree (no symlink following). Best effort.
void remove_tree(const std::string& path);
// In a freshly forked child that will run user code: the OOM killer picks it, never the agent,
// and it dumps no core. Async-signal-safe (only syscalls).
void make_child_expendable();
// One line to /dev/console, prefixed "vial-agent: " (PID-1 failures only: the console is slow).
void console_log(std::string_view line);

}  // namespace vial::guest
