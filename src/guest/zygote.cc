#include "guest/zygote.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "guest/python_session.h"
#include "guest/util.h"

namespace vial::guest {

namespace {

constexpr uid_t kSandboxUid = 1000;
constexpr gid_t kSandboxGid = 1000;
// How long the agent waits for a zygote's answer before declaring it hung.
constexpr int kReplyTimeoutMs = 5000;
constexpr int64_t kMinBackoffMs = 200;
constexpr int64_t kMaxBackoffMs = 10000;

// The python fork server, run with `python3 -u -c` after kPythonCommon. Its socket to the
// agent is fd 3.
constexpr const char* kPythonZygote = R"PY(
import json, random, socket, array, types, signal, importlib.machinery
import re, math, datetime, collections, itertools, functools
import subprocess, pathlib, traceback, uuid, hashlib, base64, time, textwrap, string
import typing, dataclasses, gc

def _serve():
    sock = socket.socket(fileno=3)
    sock.send(b"ready")
    while True:
        try:
            msg, anc, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        fds = _fds_of(anc)
        try:
            req = json.loads(msg)
            op = req.get("op")
            if op == "reseed":
                random.seed()
                sock.send(b"ok")
                continue
            if (op, len(fds)) not in (("exec", 4), ("session", 5)):
                raise ValueError("bad request")
            r, w = os.pipe()
            a = os.fork()
            if a == 0:
                g = -1
                try:
                    os.close(r)
                    g = os.fork()
                except BaseException:
                    os._exit(1)
                if g == 0:
                    os.close(w)
                    sock.close()
                    mine, fds = fds, []  # keep them open past the finally below
                    return req, mine
                try:
                    os.write(w, str(g).encode())
                except BaseException:
                    pass
                os._exit(0)
            os.close(w)
            data = os.read(r, 64)
            os.close(r)
            os.waitpid(a, 0)
            if not data:
                raise OSError("fork failed")
            sock.send(b"pid " + data)
        except Exception as e:
            sock.send(("err %s" % e).encode())
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

def _run(req, fds):
    sin, sout, serr, go = fds[:4]
    os.setsid()
    try:
        ok = os.read(go, 1)
    except OSError:
        ok = b""
    if not ok:
        os._exit(126)
    os.dup2(sin, 0)
    os.dup2(sout, 1)
    os.dup2(serr, 2)
    if req["op"] == "session":
        os.dup2(fds[4], 3)  # a session keeps its control socket, as fd 3
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and not (fd == 3 and req["op"] == "session"):
            try:
                os.close(fd)
            except OSError:
                pass
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        os.chdir(req["cwd"])
    except OSError as e:
        os.write(2, ("vial-agent: chdir %s: %s\n" % (req["cwd"], e.strerror)).encode())
        os._exit(126)
    os.environ.clear()
    for kv in req["env"]:
        k, _, v = kv.partition("=")
        os.environ[k] = v
    random.seed()
    if req["op"] == "session":
        _session(3)
    path = req["file"]
    sys.argv = [path]
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    m = types.ModuleType("__main__")
    m.__file__ = path
    m.__builtins__ = builtins
    m.__cached__ = None
    m.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    sys.modules["__main__"] = m
    try:
        with open(path, "rb") as f:
            src = f.read()
        code = compile(src, path, "exec", dont_inherit=True)
        del src
        exec(code, m.__dict__)
        status = 0
    except SystemExit as e:
        status = _exit_status(e)
    except BaseException as e:
        _report(e)
        if isinstance(e, KeyboardInterrupt):
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        status = 1
    _finish(status)

def _finish(status):
    # What interpreter shutdown does that a program can observe (non-daemon threads, atexit,
    # flushed output), without tearing down every imported module: that is slow.
    try:
        import threading
        threading._shutdown()
    except BaseException:
        pass
    try:
        import atexit
        atexit._run_exitfuncs()
    except SystemExit as e:
        status = _exit_status(e)
    except BaseException:
        pass
    _flush()
    os._exit(status)

os.chdir("/")
gc.collect()
gc.freeze()
_job = _serve()
del _serve
_run(*_job)
)PY";

bool exists_exec(const std::string& p) { return access(p.c_str(), X_OK) == 0; }

}  // namespace

Zygote::Zygote(std::string language, std::vector<std::string> argv, bool drop_privileges,
               bool quiet)
    : language_(std::move(language)), argv_(std::move(argv)), drop_(drop_privileges),
      quiet_(quiet) {}

Zygote::~Zygote() { stop(); }

bool Zygote::available() const { return !argv_.empty() && exists_exec(argv_[0]); }

bool Zygote::start(std::string* error) {
  if (pid_ > 0) return true;
  auto fail = [&](const char* what) {
    if (error) *error = std::string(what) + ": " + strerror(errno);
    return false;
  };
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return fail("socketpair");
  std::vector<char*> argvp;
  for (auto& s : argv_) argvp.push_back(s.data());
  argvp.push_back(nullptr);
  static char e0[] = "PATH=/usr/local/bin:/usr/bin:/bin", e1[] = "HOME=/home/sandbox",
              e2[] = "USER=sandbox", e3[] = "LANG=C.UTF-8", e4[] = "TERM=dumb";
  char* envp[] = {e0, e1, e2, e3, e4, nullptr};
  bool drop = drop_, quiet = quiet_;
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    errno = e;
    return fail("fork");
  }
  if (pid == 0) {
    setsid();
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
    make_child_expendable();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      if (quiet) dup2(null, 2);
    }
    if (dup2(sv[1], 3) != 3) _exit(126);
    syscall(SYS_close_range, 4u, ~0u, 0u);
    if (drop) {
      if (setgroups(0, nullptr) != 0 || setgid(kSandboxGid) != 0 || setuid(kSandboxUid) != 0)
        _exit(126);
    }
    if (chdir("/") != 0) _exit(126);
    execve(argvp[0], argvp.data(), envp);
    _exit(127);
  }
  close(sv[1]);
  sock_ = sv[0];
  pid_ = pid;
  ready_ = false;
  return true;
}

bool Zygote::ready() {
  if (ready_) return true;
  if (pid_ <= 0) {
    if (now_ms() < restart_at_ms_ || !available()) return false;
    if (!start()) {
      restart_at_ms_ = now_ms() + kMaxBackoffMs;
      return false;
    }
  }
  pollfd p{sock_, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  char buf[64];
  ssize_t n = recv(sock_, buf, sizeof buf, MSG_DONTWAIT);
  if (n == 5 && std::memcmp(buf, "ready", 5) == 0) {
    ready_ = true;
    backoff_ms_ = 0;
    return true;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
  stop();  // EOF (it died while importing) or garbage
  return false;
}

bool Zygote::request(const std::string& msg, const int* fds, int nfds, std::string& reply,
                     std::string& error) {
  if (!send_with_fds(sock_, msg, fds, nfds)) {
    error = std::string("send to ") + language_ + " zygote: " + strerror(errno);
    stop();
    return false;
  }
  int64_t end = now_ms() + kReplyTimeoutMs;
  char buf[512];
  for (;;) {
    int64_t left = end - now_ms();
    if (left <= 0) {
      error = language_ + " zygote did not answer";
      stop();
      return false;
    }
    pollfd p{sock_, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = recv(sock_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) {
      error = language_ + " zygote is gone";
      stop();
      return false;
    }
    reply.assign(buf, static_cast<size_t>(n));
    return true;
  }
}

pid_t Zygote::spawn(const std::string& file, const std::string& cwd, const std::vector<std::string>& env,
                    const int stdio[3], int ctl, const std::string& procs, std::string& error) {
  if (!ready()) {
    error = language_ + " zygote is not ready";
    return -1;
  }
  int go[2] = {-1, -1};
  if (pipe2(go, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + strerror(errno);
    return -1;
  }
  const bool session = ctl >= 0;
  nlohmann::json j = {{"op", session ? "session" : "exec"}, {"file", file}, {"cwd", cwd}, {"env", env}};
  int fds[5] = {stdio[0], stdio[1], stdio[2], go[0], ctl};
  std::string reply;
  bool sent = request(j.dump(), fds, session ? 5 : 4, reply, error);
  close(go[0]);
  pid_t pid = -1;
  if (sent && reply.rfind("pid ", 0) == 0) {
    char* end = nullptr;
    long p = std::strtol(reply.c_str() + 4, &end, 10);
    if (p > 1 && end && *end == '\0') pid = static_cast<pid_t>(p);
  }
  if (pid < 0) {
    if (sent) {
      error = language_ + " zygote: " + reply;
      stop();
    }
    close(go[1]);
    return -1;
  }
  // The child waits on `go`: contain it before it runs anything.
  if (!procs.empty() && write_file(procs, std::to_string(pid)) != 0) {
    error = "cannot move the program into its cgroup";
    ::kill(pid, SIGKILL);  // our child now (reparented): the server's reap loop collects it
    close(go[1]);
    return -1;
  }
  [[maybe_unused]] ssize_t w = write(go[1], "g", 1);
  close(go[1]);
  return pid;
}

bool Zygote::reseed(std::string& error) {
  if (!ready()) return true;  // nothing warm to re-seed; a new zygote seeds from the kernel
  std::string reply;
  if (!request(R"({"op":"reseed"})", nullptr, 0, reply, error)) return false;
  if (reply == "ok") return true;
  error = language_ + " zygote: " + reply;
  stop();
  return false;
}

bool Zygote::on_reaped(pid_t pid) {
  if (pid <= 0 || pid != pid_) return false;
  pid_ = -1;
  stop();
  return true;
}

void Zygote::stop() {
  bool was_running = pid_ > 0 || sock_ >= 0;
  if (pid_ > 0) ::kill(pid_, SIGKILL);  // the agent's reap loop collects it
  pid_ = -1;
  if (sock_ >= 0) close(sock_);
  sock_ = -1;
  ready_ = false;
  if (was_running) {
    backoff_ms_ = backoff_ms_ == 0 ? kMinBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
    restart_at_ms_ = now_ms() + backoff_ms_;
  }
}

WarmInterpreters::WarmInterpreters(bool drop_privileges, bool quiet) {
  zygotes_.push_back(std::make_unique<Zygote>(
      "python", std::vector<std::string>{"/usr/bin/python3", "-u", "-c", std::string(kPythonCommon) + kPythonZygote},
      drop_privileges, quiet));
}

void WarmInterpreters::start_all() {
  for (auto& z : zygotes_)
    if (z->available()) z->start();
}

Zygote* WarmInterpreters::get(const std::string& language) {
  for (auto& z : zygotes_)
    if (z->language() == language) return z->ready() ? z.get() : nullptr;
  return nullptr;
}

std::vector<std::string> WarmInterpreters::ready_languages() {
  std::vector<std::string> out;
  for (auto& z : zygotes_)
    if (z->ready()) out.push_back(z->language());
  return out;
}

std::vector<std::string> WarmInterpreters::available_languages() const {
  std::vector<std::string> out;
  for (const auto& z : zygotes_)
    if (z->available()) out.push_back(z->language());
  return out;
}

bool WarmInterpreters::on_reaped(pid_t pid) {
  for (auto& z : zygotes_)
    if (z->on_reaped(pid)) return true;
  return false;
}

bool WarmInterpreters::reseed_all(std::string& error) {
  bool ok = true;
  for (auto& z : zygotes_) {
    std::string e;
    if (!z->reseed(e)) {
      ok = false;
      if (!error.empty()) error += "; ";
      error += e;
    }
  }
  return ok;
}

void WarmInterpreters::stop_all() {
  for (auto& z : zygotes_) z->stop();
}

}  // namespace vial::guest
