// The python side of notebook sessions (see session.h): helpers shared with the zygote
// script, and `_session(sock)`, the loop of a persistent interpreter.
//
// Agent -> interpreter, one SEQPACKET message per cell:
//   {"file": PATH, "cwd": DIR or "", "env": {K: V}} + SCM_RIGHTS [stdin, stdout, stderr]
// The interpreter puts the three fds on 0-2, runs the file's code in the session's one
// globals dict (that of a fresh `__main__`), prints an uncaught exception's traceback to the
// cell's stderr, puts /dev/null back on 0-2 (so the pipes close) and answers
//   "done STATUS CPU_MS"   (STATUS 0, 1 after an exception, N for SystemExit(N); the agent
//   reads the peak RSS from /proc: importing `resource` costs a first cell under TCG dearly)
// SIGINT raises KeyboardInterrupt only while a cell runs: the agent's interrupt at a timeout
// stops the cell and keeps the state.
#pragma once

namespace vial::guest {

// Imports and helpers both the zygote and a cold session interpreter need.
inline constexpr const char* kPythonCommon = R"PY(
import os, sys, json, random, socket, array, types, builtins, signal, io, importlib.machinery

def _fds_of(anc):
    fds = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[: len(data) - len(data) % a.itemsize])
            fds.extend(a)
    return fds

def _exit_status(e):
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xff
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1

def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass

def _report(e):
    tb = e.__traceback__.tb_next if e.__traceback__ else None  # drop the runner's frame
    e.__traceback__ = tb
    if sys.excepthook is sys.__excepthook__:
        import traceback  # it reads linecache, where cells keep their source (no file)
        traceback.print_exception(type(e), e, tb)
    else:
        sys.excepthook(type(e), e, tb)

def _fresh_stdio(enc):
    # New text layers each cell: no stale stdin buffer, and a stream a cell closed comes back.
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.open(0, "rb", closefd=False), encoding=enc[0][0], errors=enc[0][1])
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(io.open(fd, "wb", buffering=0, closefd=False),
                                  encoding=enc[fd][0], errors=enc[fd][1], write_through=True)
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)

def _session(sock):
    import linecache
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.path[0] = ""
    random.seed()
    enc = [(s.encoding, s.errors) for s in (sys.__stdin__, sys.__stdout__, sys.__stderr__)]
    null = os.open(os.devnull, os.O_RDWR)
    running = [False]
    def interrupt(sig, frame):
        if running[0]:
            raise KeyboardInterrupt
    signal.signal(signal.SIGINT, interrupt)
    cells = 0
    while True:
        try:
            msg, anc, _flags, _addr = sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * 4))
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        fds = _fds_of(anc)
        req = json.loads(msg)
        for i in range(3):
            os.dup2(fds[i], i)
        for fd in fds:
            os.close(fd)
        _fresh_stdio(enc)
        cells += 1
        t = os.times()
        cpu0 = t.user + t.system
        status = 0
        try:
            os.environ.update(req["env"])
            if req["cwd"]:
                os.chdir(req["cwd"])
            name = "<cell %d>" % cells
            sys.argv = [req["file"]]  # as a one-shot run sees them
            main.__file__ = req["file"]
            with open(req["file"], "rb") as f:
                src = f.read()
            linecache.cache[name] = (len(src), None, src.decode("utf-8", "replace").splitlines(True), name)
            running[0] = True
            try:
                exec(compile(src, name, "exec", dont_inherit=True), main.__dict__)
            finally:
                running[0] = False
        except SystemExit as e:
            status = _exit_status(e)
        except BaseException as e:
            _report(e)
            status = 1
        _flush()
        for i in range(3):
            os.dup2(null, i)
        t = os.times()
        sock.send(b"done %d %d" % (status, int((t.user + t.system - cpu0) * 1000)))
)PY";

// A session interpreter started cold (no zygote ready): its control socket is fd 3.
inline constexpr const char* kPythonSessionMain = R"PY(
_session(socket.socket(fileno=3))
)PY";

}  // namespace vial::guest
