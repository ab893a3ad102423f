"""Client for the `vial serve` HTTP API (docs/api.md), standard library only.

    from vial_client import VialClient

    vial = VialClient()                       # the local daemon's unix socket
    print(vial.run("python", code="print(6 * 7)")["stdout"])
    with vial.create_session("python") as s:
        s.exec(code="x = 41")
        print(s.exec(code="print(x + 1)")["stdout"])
        s.put_file("data.bin", b"\\x00\\x01")
        print(s.get_file("data.bin"))

    remote = VialClient(base_url="http://127.0.0.1:8080", token="...")   # TCP + bearer token

Sandboxes have no network unless asked: `network` (run, run_stream, create_session) is the API's
network object as a dict, e.g. {"allow_hosts": ["pypi.test"], "add_hosts": {"pypi.test":
"127.0.0.2"}, "allow_cidrs": ["127.0.0.2/32"]} (docs/api.md, "Network").

Output is bytes: results have "stdout"/"stderr" as str (for reading; bytes that are not UTF-8
show as U+FFFD) and "stdout_bytes"/"stderr_bytes" exact; stream events have "data" and
"data_bytes". `stdin` takes str or bytes.

Every request opens its own connection (cheap on a unix socket, and a stream that is closed
early must hang up: the server then cancels the run, or deletes the session of an exec).
Errors raise VialError or one of its subclasses.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import urllib.parse
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

__all__ = [
    "VialClient",
    "Session",
    "VialError",
    "InvalidInput",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooLarge",
    "BootFailed",
    "CapacityError",
    "Unavailable",
    "VialTimeout",
    "default_socket_path",
]

# Seconds a request may wait beyond the program's own timeout (boot, queueing, file writes).
_SLACK_S = 120.0
_DEFAULT_PROGRAM_TIMEOUT_S = 30


class VialError(Exception):
    """The server answered with an error (or a stream ended with an `error` event)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class InvalidInput(VialError):
    """400: bad JSON, an unknown or wrong-typed field (named in the message), a bad path."""


class Unauthorized(VialError):
    """401: TCP request without a bearer token."""


class Forbidden(VialError):
    """403: wrong bearer token."""


class NotFound(VialError):
    """404: unknown session, file or endpoint."""


class Conflict(VialError):
    """409: the session is already running code; a published host port is in use."""


class TooLarge(VialError):
    """413: body over the server's limit."""


class BootFailed(VialError):
    """502: the sandbox VM failed to start."""


class Unavailable(VialError):
    """503: the server is shutting down."""


class CapacityError(Unavailable):
    """503 `capacity`: no room for another VM now; retry after `retry_after` seconds."""

    def __init__(self, status: int, code: str, message: str, retry_after: Optional[float] = None):
        super().__init__(status, code, message)
        self.retry_after = retry_after


class VialTimeout(VialError):
    """504: a deadline of vial's own (a program's timeout is a normal result instead)."""


# Error code -> (HTTP status, exception class). Stream `error` events carry no status: they get
# the one their code has here.
_CODES = {
    "invalid_input": (400, InvalidInput),
    "bad_request": (400, InvalidInput),
    "unauthorized": (401, Unauthorized),
    "forbidden": (403, Forbidden),
    "not_found": (404, NotFound),
    "conflict": (409, Conflict),
    "too_large": (413, TooLarge),
    "boot_failed": (502, BootFailed),
    "capacity": (503, CapacityError),
    "unavailable": (503, Unavailable),
    "timeout": (504, VialTimeout),
}
_BY_STATUS = {status: cls for status, cls in _CODES.values() if cls is not CapacityError}


def _make_error(status: int, error: Mapping[str, Any], retry_after: Optional[str] = None) -> VialError:
    code = str(error.get("code", "http_%d" % status))
    message = str(error.get("message", ""))
    cls = _CODES[code][1] if code in _CODES else _BY_STATUS.get(status, VialError)
    if cls is CapacityError:
        try:
            seconds = float(retry_after) if retry_after is not None else None
        except ValueError:
            seconds = None
        return CapacityError(status, code, message, seconds)
    return cls(status, code, message)


def _vial_home() -> str:
    """Mirrors vial_home() in src/util/paths.cc."""
    if os.environ.get("VIAL_HOME"):
        return os.path.abspath(os.environ["VIAL_HOME"])
    if os.geteuid() == 0:
        return "/var/lib/vial"
    if os.environ.get("XDG_DATA_HOME"):
        return os.path.join(os.environ["XDG_DATA_HOME"], "vial")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "vial")


def default_socket_path() -> str:
    """$VIAL_SOCKET, else $VIAL_HOME/run/vial.sock (the server's default)."""
    return os.environ.get("VIAL_SOCKET") or os.path.join(_vial_home(), "run", "vial.sock")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection whose transport is a unix stream socket."""

    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


Files = Union[Mapping[str, Union[str, bytes]], Sequence[Mapping[str, Any]]]

# The API's `network` object: {"enabled": bool, "allow_hosts": [...], "allow_cidrs": [...],
# "add_hosts": {name: ip} or ["name:ip"], "ports": ["[HOST_IP:]HOST_PORT:GUEST_PORT" or
# {host_ip, host_port, guest_port}]}, every key optional (docs/api.md, "Network").
Network = Mapping[str, Any]


def _files_json(files: Files) -> List[Dict[str, Any]]:
    """{path: str | bytes} or a list of {path, content | content_base64, mode} entries."""
    if not isinstance(files, Mapping):
        return [dict(f) for f in files]
    out = []
    for path, data in files.items():
        if isinstance(data, (bytes, bytearray, memoryview)):
            out.append({"path": path, "content_base64": base64.b64encode(bytes(data)).decode("ascii")})
        else:
            out.append({"path": path, "content": data})
    return out


Stdin = Union[str, bytes, bytearray, memoryview]


def _exec_body(language: Optional[str], code: Optional[str], argv: Optional[Sequence[str]],
               env: Optional[Mapping[str, str]], cwd: Optional[str], stdin: Optional[Stdin],
               timeout: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    if language is not None:
        body["language"] = language
    if code is not None:
        body["code"] = code
    if argv is not None:
        body["argv"] = list(argv)
    if env is not None:
        body["env"] = dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if isinstance(stdin, str):
        body["stdin"] = stdin
    elif stdin is not None:
        body["stdin_base64"] = base64.b64encode(bytes(stdin)).decode("ascii")
    if timeout is not None:
        body["timeout"] = timeout
    return body


def _take_bytes(obj: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The wire carries bytes as text `name` when they are UTF-8, else as `name`_base64
    (docs/api.md, "Bytes in JSON"). Leaves `name` (str; invalid UTF-8 as U+FFFD) and
    `name`_bytes (bytes, exact) in `obj`."""
    encoded = obj.pop(name + "_base64", None)
    if encoded is not None:
        raw = base64.b64decode(encoded)
        obj[name] = raw.decode("utf-8", "replace")
    elif isinstance(obj.get(name), str):
        raw = obj[name].encode("utf-8")
    else:
        return obj
    obj[name + "_bytes"] = raw
    return obj


def _result(result: Dict[str, Any]) -> Dict[str, Any]:
    return _take_bytes(_take_bytes(result, "stdout"), "stderr")


def _request_wait(body: Mapping[str, Any]) -> float:
    return float(body.get("timeout", _DEFAULT_PROGRAM_TIMEOUT_S)) + _SLACK_S


class VialClient:
    """A `vial serve` endpoint: a unix socket (default) or `base_url` (http[s]://host:port)."""

    def __init__(self, socket_path: Optional[str] = None, base_url: Optional[str] = None,
                 token: Optional[str] = None, timeout: float = _SLACK_S, tenant: Optional[str] = None):
        """`timeout`: seconds to wait for a reply to a request that runs no program.
        `tenant`: sent as X-Vial-Tenant (names the tenant in the server's logs and VM names)."""
        if socket_path and base_url:
            raise ValueError("give socket_path or base_url, not both")
        self.token = token
        self.timeout = timeout
        self.tenant = tenant
        if base_url:
            url = urllib.parse.urlsplit(base_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"base_url must look like http://127.0.0.1:8080, got {base_url!r}")
            self._scheme = url.scheme
            self._host = url.hostname
            self._port = url.port
            self._prefix = url.path.rstrip("/")
            self.socket_path = None
        else:
            self.socket_path = socket_path or default_socket_path()
            self._prefix = ""

    def __repr__(self) -> str:
        where = self.socket_path or f"{self._scheme}://{self._host}:{self._port}"
        return f"VialClient({where!r})"

    # --- transport -----------------------------------------------------------------------

    def _connect(self, wait: float) -> http.client.HTTPConnection:
        if self.socket_path:
            return _UnixHTTPConnection(self.socket_path, wait)
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=wait)
        return http.client.HTTPConnection(self._host, self._port, timeout=wait)

    def _send(self, method: str, path: str, body: Optional[bytes] = None,
              content_type: Optional[str] = None, accept: str = "application/json",
              wait: Optional[float] = None, allow: Sequence[int] = ()
              ) -> "tuple[http.client.HTTPConnection, http.client.HTTPResponse]":
        """Sends a request; returns the open connection and the response (status and headers read).
        Raises the matching VialError for an error status not in `allow`."""
        headers = {"Accept": accept, "Connection": "close"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.tenant:
            headers["X-Vial-Tenant"] = self.tenant
        conn = self._connect(wait if wait is not None else self.timeout)
        try:
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as send_error:
                # The server may have refused the body (413) and closed before reading it all.
                try:
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise send_error from None
            else:
                resp = conn.getresponse()
            if resp.status >= 400 and resp.status not in allow:
                raw = resp.read()
                try:
                    error = json.loads(raw)["error"]
                except (ValueError, KeyError, TypeError):
                    error = {"code": "http_%d" % resp.status, "message": raw.decode("utf-8", "replace").strip()}
                raise _make_error(resp.status, error, resp.getheader("Retry-After"))
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def _call(self, method: str, path: str, body: Optional[bytes] = None,
              content_type: Optional[str] = None, wait: Optional[float] = None,
              allow: Sequence[int] = ()) -> bytes:
        conn, resp = self._send(method, path, body, content_type, wait=wait, allow=allow)
        try:
            return resp.read()
        finally:
            conn.close()

    def _json(self, method: str, path: str, payload: Optional[Mapping[str, Any]] = None,
              wait: Optional[float] = None, allow: Sequence[int] = ()) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        return json.loads(self._call(method, path, body, "application/json" if body else None, wait, allow))

    def _stream(self, path: str, payload: Mapping[str, Any]) -> Iterator[Dict[str, Any]]:
        conn, resp = self._send("POST", path, json.dumps(payload).encode(), "application/json",
                                accept="application/x-ndjson", wait=_request_wait(payload))
        try:
            # HTTPResponse.readline decodes chunked transfer and returns each line as it arrives.
            while True:
                line = resp.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "error":
                    error = event.get("error", {})
                    raise _make_error(_CODES.get(error.get("code"), (500,))[0], error)
                yield _take_bytes(event, "data")
        finally:
            # Hang up (the response owns the socket once the connection handed it over): if the
            # stream did not end, the server cancels the run.
            resp.close()
            conn.close()

    # --- API -----------------------------------------------------------------------------

    def run(self, language: str, code: Optional[str] = None, argv: Optional[Sequence[str]] = None,
            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            stdin: Optional[Stdin] = None, timeout: Optional[int] = None,
            files: Optional[Files] = None, memory_mib: Optional[int] = None,
            network: Optional[Network] = None) -> Dict[str, Any]:
        """Runs code (or argv) once in a fresh sandbox. Returns the result: stdout, stderr (str,
        bytes that are not UTF-8 as U+FFFD), stdout_bytes, stderr_bytes (bytes, exact),
        exit_code, signal, timed_out, truncated, accel, source, timing, and network
        ({allowed, denied} decision counts) when the sandbox had a network. A failing program is
        a result (exit_code != 0, or 124 and timed_out), not an error. `stdin`: str or bytes.

        `network`: the sandbox's network policy, sent as the `network` field: a dict with any of
        enabled (bool), allow_hosts (names, "*.example.test" for names below), allow_cidrs
        ("127.0.0.2/32"), add_hosts ({"name": "ip"} or ["name:ip"]). No `ports`: a one-shot run
        can't publish them. None (the default): no network. A bad policy raises InvalidInput
        whose message names the field ("network.allow_cidrs[0] ...")."""
        body = self._run_body(language, code, argv, env, cwd, stdin, timeout, files, memory_mib, network)
        return _result(self._json("POST", "/v1/run", body, wait=_request_wait(body)))

    def run_stream(self, language: str, code: Optional[str] = None, argv: Optional[Sequence[str]] = None,
                   env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                   stdin: Optional[Stdin] = None, timeout: Optional[int] = None,
                   files: Optional[Files] = None, memory_mib: Optional[int] = None,
                   network: Optional[Network] = None) -> Iterator[Dict[str, Any]]:
        """Like run() (same arguments, `network` too), yielding events as the program writes:
        {"type": "stdout"|"stderr", "data": str, "data_bytes": bytes} in order, then
        {"type": "result", ...} (the result without its output). A chunk is what the program's
        pipe gave, so it may end inside a UTF-8 character: join data_bytes for exact output.
        Closing the generator early hangs up, which cancels the run."""
        body = self._run_body(language, code, argv, env, cwd, stdin, timeout, files, memory_mib, network)
        return self._stream("/v1/run", body)

    @staticmethod
    def _run_body(language, code, argv, env, cwd, stdin, timeout, files, memory_mib, network) -> Dict[str, Any]:
        body = _exec_body(language, code, argv, env, cwd, stdin, timeout)
        if files is not None:
            body["files"] = _files_json(files)
        if memory_mib is not None:
            body["memory_mib"] = memory_mib
        if network is not None:
            body["network"] = dict(network)
        return body

    def create_session(self, language: str = "python", idle_timeout: Optional[int] = None,
                       memory_mib: Optional[int] = None, network: Optional[Network] = None) -> "Session":
        """Starts a sandbox kept across calls (Python keeps variables between execs).

        `network`: as for run(), plus `ports`: ["8080:80", "127.0.0.1:8443:443"] or
        [{"host_ip": ..., "host_port": ..., "guest_port": ...}] publishes guest TCP ports on the
        host (HOST_IP defaults to 127.0.0.1). A host port already in use raises Conflict. The
        session's `info["network"]` is the policy as the server normalized it."""
        body: Dict[str, Any] = {"language": language}
        if idle_timeout is not None:
            body["idle_timeout"] = idle_timeout
        if memory_mib is not None:
            body["memory_mib"] = memory_mib
        if network is not None:
            body["network"] = dict(network)
        return Session(self, self._json("POST", "/v1/sessions", body, wait=self.timeout + _SLACK_S))

    def session(self, session_id: str) -> "Session":
        """An existing session by id (NotFound if there is none)."""
        return Session(self, self._json("GET", "/v1/sessions/" + _quote(session_id)))

    def sessions(self) -> List[Dict[str, Any]]:
        return self._json("GET", "/v1/sessions")["sessions"]

    def health(self) -> Dict[str, Any]:
        """{status: ok|draining, version, accel, vms, sessions, warm_pool}; no token needed.
        A draining server answers 503 with the same object: it is returned, not raised."""
        return self._json("GET", "/healthz", allow=(503,))

    def metrics(self) -> str:
        """Prometheus text format."""
        return self._call("GET", "/metrics").decode("utf-8")


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _quote_path(path: str) -> str:
    """Keeps the slashes between segments, but a leading one is escaped: the server would read
    "files//etc" as the relative path "etc"."""
    quoted = urllib.parse.quote(path, safe="/")
    return "%2F" + quoted[1:] if quoted.startswith("/") else quoted


class Session:
    """A sandbox kept across calls. Use as a context manager to delete it at the end."""

    def __init__(self, client: VialClient, info: Dict[str, Any]):
        self.client = client
        self.id: str = info["id"]
        self.language: str = info.get("language", "")
        self.info = info

    def __repr__(self) -> str:
        return f"Session({self.id!r}, {self.language!r})"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.delete()
        except NotFound:
            pass  # already gone (reaped, or deleted by a hung-up exec)

    @property
    def _path(self) -> str:
        return "/v1/sessions/" + _quote(self.id)

    def refresh(self) -> Dict[str, Any]:
        """The server's view: {id, language, vm, source, idle_timeout, created_at, execs, busy,
        alive, network}."""
        self.info = self.client._json("GET", self._path)
        return self.info

    def exec(self, code: Optional[str] = None, argv: Optional[Sequence[str]] = None,
             env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             stdin: Optional[Stdin] = None, timeout: Optional[int] = None) -> Dict[str, Any]:
        """Runs code in the session; same result as VialClient.run. Conflict while another runs."""
        body = _exec_body(None, code, argv, env, cwd, stdin, timeout)
        return _result(self.client._json("POST", self._path + "/exec", body, wait=_request_wait(body)))

    def exec_stream(self, code: Optional[str] = None, argv: Optional[Sequence[str]] = None,
                    env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                    stdin: Optional[Stdin] = None, timeout: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Like VialClient.run_stream. IMPORTANT: closing the generator before the result event
        hangs up, and the server then deletes the session."""
        return self.client._stream(self._path + "/exec", _exec_body(None, code, argv, env, cwd, stdin, timeout))

    def put_file(self, path: str, data: Union[bytes, str], mode: int = 0o644) -> Dict[str, Any]:
        """Writes `data` byte-exact to `path` (relative to the sandbox home). Returns {path, size}."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        url = f"{self._path}/files/{_quote_path(path)}?mode={mode:o}"
        raw = self.client._call("PUT", url, bytes(data), "application/octet-stream",
                                wait=self.client.timeout + _SLACK_S)
        return json.loads(raw)

    def get_file(self, path: str) -> bytes:
        url = f"{self._path}/files/{_quote_path(path)}"
        return self.client._call("GET", url, wait=self.client.timeout + _SLACK_S)

    def list_files(self, dir: str = ".") -> List[Dict[str, Any]]:
        """Entries of a directory: [{name, type, size, mode, mtime}]."""
        url = f"{self._path}/files?dir={urllib.parse.quote(dir, safe='')}"
        return self.client._json("GET", url)["entries"]

    def delete(self) -> None:
        """Destroys the session's VM."""
        self.client._json("DELETE", self._path)
