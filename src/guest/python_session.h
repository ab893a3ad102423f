// The python side of notebook sessions (see session.h): helpers shared with the zygote
// script, and `_session(sock)`, the loop of a persistent interpreter.
//
// Agent -> interpreter, one SEQPACKET message per cell:
//   "FILE\0CWD\0K=V\0K=V..." (CWD "" keeps the current one; the K=V are set in os.environ)
//   + SCM_RIGHTS [stdin, stdout, stderr]
// The interpreter puts the three fds on 0-2, runs the file's code in the session's one
// globals dict (that of a fresh `__main__`), prints an uncaught exception's traceback to the
// cell's stderr, puts /dev/null back on 0-2 (so the pipes close) and answers
//   "done STATUS CPU_MS"   (STATUS 0, 1 after an exception, N for SystemExit(N))
// SIGINT raises KeyboardInterrupt only while a cell runs: the agent's interrupt at a timeout
// stops the cell and keeps the state.
//
// Under TCG every module imported costs a cold start dearly (json, socket and random added
// ~0.5 s), so this code uses only what python has loaded at startup plus _socket and
// _signal; linecache gets the cells' source once something has imported it.
#pragma once

namespace vial::guest {

// Imports and helpers both the zygote and a cold session interpreter need.
inline constexpr const char* kPythonCommon = R"PY(
import os, sys, io, builtins, _socket, _signal

def _fds_of(anc):
    fds = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            for i in range(0, len(data) - len(data) % 4, 4):
                fds.append(int.from_bytes(data[i:i + 4], sys.byteorder, signed=True))
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

_cell_sources = {}  # cell name -> source, until linecache has it

def _share_sources():
    lc = sys.modules.get("linecache")
    if lc is None:
        return
    for name, src in _cell_sources.items():
        lc.cache[name] = (len(src), None, src.decode("utf-8", "replace").splitlines(True), name)
    _cell_sources.clear()

def _report(e):
    tb = e.__traceback__.tb_next if e.__traceback__ else None  # drop the runner's frame
    e.__traceback__ = tb
    if sys.excepthook is sys.__excepthook__:
        import traceback  # it reads linecache, where cells keep their source (no file)
        _share_sources()
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

def _session(ctl_fd):
    sock = _socket.socket(fileno=ctl_fd)
    main = type(sys)("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.path[0] = ""
    enc = [(s.encoding, s.errors) for s in (sys.__stdin__, sys.__stdout__, sys.__stderr__)]
    null = os.open(os.devnull, os.O_RDWR)
    running = [False]
    def interrupt(sig, frame):
        if running[0]:
            raise KeyboardInterrupt
    _signal.signal(_signal.SIGINT, interrupt)
    cells = 0
    while True:
        msg, anc, _flags, _addr = sock.recvmsg(1 << 20, _socket.CMSG_SPACE(16 * 4))
        if not msg:
            os._exit(0)
        fds = _fds_of(anc)
        path, cwd, *env = os.fsdecode(msg).split("\0")
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
            for kv in env:
                k, _, v = kv.partition("=")
                os.environ[k] = v
            if cwd:
                os.chdir(cwd)
            name = "<cell %d>" % cells
            sys.argv = [path]  # as a one-shot run sees them
            main.__file__ = path
            with open(path, "rb") as f:
                src = f.read()
            _cell_sources[name] = src
            _share_sources()
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
_session(3)
)PY";

}  // namespace vial::guest
