// vial-agent: the guest side of the agent protocol.
//   As PID 1 (the initramfs /init): boots the VM and serves the virtio-serial port `agent`.
//   `--serve-unix PATH`: serves one unix-socket connection at a time (tests, development).
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "guest/cgroup.h"
#include "guest/init.h"
#include "guest/server.h"
#include "guest/session.h"
#include "guest/util.h"
#include "guest/zygote.h"

#ifndef VIAL_VERSION
#define VIAL_VERSION "0.0.0"
#endif

namespace {

using namespace vial::guest;

// Keeps fds 0-2 occupied so pipes never land there (a PID 1 may start with none open).
void occupy_std_fds() {
  for (;;) {
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0) fd = open("/", O_RDONLY);
    if (fd < 0 || fd > 2) {
      if (fd > 2) close(fd);
      return;
    }
  }
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: vial-agent [--serve-unix PATH [--warm] | --help | --version]\n"
               "  As PID 1 it boots the VM and serves the agent protocol on the virtio-serial\n"
               "  port named 'agent'. --serve-unix PATH serves the protocol on a unix socket,\n"
               "  one connection at a time, without touching the system (tests). --warm\n"
               "  also starts the warm interpreters (python fork server), as PID 1 does.\n");
}

const char* g_socket_path = nullptr;
std::string g_code_dir;

void on_term(int) {
  // Only async-signal-safe calls: leave no socket or empty code directory behind.
  if (g_socket_path) unlink(g_socket_path);
  if (!g_code_dir.empty()) rmdir(g_code_dir.c_str());
  _exit(0);
}

int serve_unix(const char* path, bool warm) {
  sockaddr_un addr{};
  if (std::strlen(path) >= sizeof addr.sun_path) {
    std::fprintf(stderr, "vial-agent: socket path too long\n");
    return 2;
  }
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path);
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  unlink(path);
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(ls, 4) != 0) {
    std::fprintf(stderr, "vial-agent: listen on %s: %s\n", path, std::strerror(errno));
    return 1;
  }
  g_socket_path = path;

  static Sessions sessions(nullptr);
  ExecConfig cfg;
  cfg.drop_privileges = geteuid() == 0;
  cfg.sessions = &sessions;
  const char* tmp = std::getenv("TMPDIR");
  g_code_dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/vial-agent-" + std::to_string(getpid());
  cfg.code_dir = g_code_dir;
  mkdir(g_code_dir.c_str(), 0755);
  chmod(g_code_dir.c_str(), 0755);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);

  Server server(cfg);
  static std::unique_ptr<WarmInterpreters> interpreters;
  if (warm) {
    // Programs forked by a zygote are orphaned on purpose: we must be the one reaping them.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    interpreters = std::make_unique<WarmInterpreters>(cfg.drop_privileges, /*quiet=*/false);
    interpreters->start_all();
    server.set_warm(interpreters.get());
  }
  for (;;) {
    int c = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::fprintf(stderr, "vial-agent: accept: %s\n", std::strerror(errno));
      return 1;
    }
    server.serve_connection(c);
    close(c);
  }
}

bool kernel_cmdline_has(const std::string& word) {
  std::ifstream in("/proc/cmdline");
  std::string w;
  while (in >> w) {
    if (w == word) return true;
  }
  return false;
}

[[noreturn]] void run_as_init() {
  mount_kernel_file_systems();
  // Parked: the host snapshots this guest before it has read a byte of its root disk, and
  // restores that snapshot with whichever disk it likes (named machines start this way).
  const bool park = kernel_cmdline_has("vial.park=1");
  load_virtio_drivers(/*root_disk=*/!park);
  if (!park) mount_root_file_systems();
  int port = open_agent_port();

  static Cgroups cgroups;
  ExecConfig cfg;
  cfg.drop_privileges = true;
  cfg.code_dir = "/run/vial";
  cfg.cgroups = &cgroups;
  cfg.system = true;
  static Sessions sessions(&cgroups);
  cfg.sessions = &sessions;
  static Server server(cfg);
  server.prepare_network();
  auto finish_boot = [] {
    cgroups.init();  // false: exec containment falls back to process groups
    // The host turns warm interpreters off (vial.warm=0) for a VM that runs one program and
    // dies: starting python's fork server would only compete with that program for the vCPU.
    if (!kernel_cmdline_has("vial.warm=0")) {
      static WarmInterpreters interpreters(/*drop_privileges=*/true, /*quiet=*/true);
      interpreters.start_all();
      server.set_warm(&interpreters);
    }
    boot_mark("serving");
  };
  if (park) {
    boot_mark("parked");
    server.park([finish_boot] {
      boot_mark("unparked");
      mount_root_file_systems();
      finish_boot();
    });
  } else {
    finish_boot();
  }
  server.serve_port(port);
}

}  // namespace

int main(int argc, char** argv) {
  occupy_std_fds();
  if (getpid() == 1) {
    try {
      run_as_init();
    } catch (const std::exception& e) {
      fatal_boot((std::string("fatal: ") + e.what()).c_str());
    } catch (...) {
      fatal_boot("fatal: unknown exception");
    }
  }
  std::string a1 = argc > 1 ? argv[1] : "";
  if (a1 == "--help" || a1 == "-h") {
    usage(stdout);
    return 0;
  }
  if (a1 == "--version") {
    std::printf("vial-agent %s\n", VIAL_VERSION);
    return 0;
  }
  if (a1 == "--serve-unix" && argc == 3) return serve_unix(argv[2], false);
  if (a1 == "--serve-unix" && argc == 4 && std::string(argv[3]) == "--warm")
    return serve_unix(argv[2], true);
  usage(stderr);
  return 2;
}
