"""Tests of vial_client against a real `vial serve`.

Run them with tests/clients/run_client_tests.sh VIAL_BINARY python (CTest: ClientsPython): it
starts the server and sets VIAL_TEST_SOCKET, VIAL_TEST_URL and VIAL_TEST_TOKEN.
"""

import http.server
import os
import socket
import threading
import time
import unittest
from unittest import mock

import vial_client
from vial_client import CapacityError, Conflict, InvalidInput, NotFound, TooLarge, VialClient

SOCKET = os.environ.get("VIAL_TEST_SOCKET")
URL = os.environ.get("VIAL_TEST_URL")
TOKEN = os.environ.get("VIAL_TEST_TOKEN")
needs_server = unittest.skipUnless(SOCKET, "no server: run tests/clients/run_client_tests.sh VIAL_BINARY python")

# Writes to stdout and stderr alternately, flushing each, so the stream shows the order.
INTERLEAVED = """
import sys, time
for i in range(3):
    print(f"out{i}", flush=True)
    time.sleep(0.05)
    print(f"err{i}", file=sys.stderr, flush=True)
    time.sleep(0.05)
"""


EXPECTED_INTERLEAVING = [("stdout", "out0\n"), ("stderr", "err0\n"), ("stdout", "out1\n"),
                         ("stderr", "err1\n"), ("stdout", "out2\n"), ("stderr", "err2\n")]

# Prints, then runs far longer than any test waits (its 30 s timeout would end it first).
SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(600)"


# Byte-exactness (issue 14): stdout gets every byte value, a reversed BOM, a lone continuation
# byte, then text with a euro sign split across two writes (two chunks, most likely); stderr the
# byte values reversed.
BINARY = """
import sys, time
o, e = sys.stdout.buffer, sys.stderr.buffer
o.write(bytes(range(256)) + b"\\xff\\xfe\\x80"); o.flush()
e.write(bytes(range(255, -1, -1))); e.flush()
time.sleep(0.2)
o.write(b" split \\xe2\\x82"); o.flush()
time.sleep(0.2)
o.write(b"\\xac euro\\n"); o.flush()
"""
BINARY_STDOUT = bytes(range(256)) + b"\xff\xfe\x80 split \xe2\x82\xac euro\n"
BINARY_STDERR = bytes(range(255, -1, -1))
ECHO = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
BINARY_STDIN = bytes(range(256)) + b"\xff\xfe\x80\xe2\x82"


def streamed_bytes(events, kind):
    return b"".join(e["data_bytes"] for e in events if e["type"] == kind)


def wait_until(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def merged_output(events):
    """(type, line) pairs: a line may come in several chunks ("out0", "\\n"), several lines in one."""
    runs = []
    for e in events:
        if runs and runs[-1][0] == e["type"]:
            runs[-1][1] += e["data"]
        else:
            runs.append([e["type"], e["data"]])
    return [(kind, line) for kind, data in runs for line in data.splitlines(keepends=True)]


class DefaultSocketTest(unittest.TestCase):
    def test_vial_socket_wins(self):
        with mock.patch.dict(os.environ, {"VIAL_SOCKET": "/x/s.sock", "VIAL_HOME": "/h"}):
            self.assertEqual(vial_client.default_socket_path(), "/x/s.sock")

    def test_vial_home(self):
        with mock.patch.dict(os.environ, {"VIAL_SOCKET": "", "VIAL_HOME": "/h"}):
            self.assertEqual(vial_client.default_socket_path(), "/h/run/vial.sock")

    def test_user_default(self):
        env = {"VIAL_SOCKET": "", "VIAL_HOME": "", "XDG_DATA_HOME": "", "HOME": "/home/u"}
        with mock.patch.dict(os.environ, env), mock.patch("os.geteuid", return_value=1000):
            self.assertEqual(vial_client.default_socket_path(), "/home/u/.local/share/vial/run/vial.sock")
        with mock.patch.dict(os.environ, env), mock.patch("os.geteuid", return_value=0):
            self.assertEqual(vial_client.default_socket_path(), "/var/lib/vial/run/vial.sock")

    def test_socket_and_url_exclude_each_other(self):
        with self.assertRaises(ValueError):
            VialClient(socket_path="/s", base_url="http://127.0.0.1:1")


@needs_server
class RunTest(unittest.TestCase):
    def setUp(self):
        self.vial = VialClient(socket_path=SOCKET)

    def test_health_and_metrics(self):
        health = self.vial.health()
        self.assertEqual(health["status"], "ok")
        self.assertIn("accel", health)
        self.assertIn("vial_sandboxes", self.vial.metrics())

    def test_run_code_with_env_stdin_and_files(self):
        code = ("import os, sys\n"
                "print(os.environ['GREETING'], sys.stdin.read())\n"
                "print(open('note.txt').read(), open('blob.bin', 'rb').read().hex())\n"
                "sys.exit(3)\n")
        r = self.vial.run("python", code=code, env={"GREETING": "hi"}, stdin="from stdin",
                          files={"note.txt": "a note", "blob.bin": b"\x00\xff\x10"})
        self.assertEqual(r["stdout"], "hi from stdin\na note 00ff10\n", r)
        self.assertEqual(r["exit_code"], 3, r)  # a failing program is a result, not an error
        self.assertFalse(r["timed_out"])
        self.assertIn(r["source"], ("warm", "template", "cold"))

    def test_run_argv(self):
        r = self.vial.run("python", argv=["python3", "-c", "import sys; print(sys.argv[1:])", "a b", "c"])
        self.assertEqual(r["stdout"], "['a b', 'c']\n", r)
        self.assertEqual(r["exit_code"], 0)

    def test_run_stream_keeps_order_and_ends_with_result(self):
        events = list(self.vial.run_stream("python", code=INTERLEAVED))
        self.assertEqual(events[-1]["type"], "result", events)
        self.assertEqual(events[-1]["exit_code"], 0)
        self.assertNotIn("stdout", events[-1])
        self.assertEqual(merged_output(events[:-1]), EXPECTED_INTERLEAVING)

    def test_bad_input_is_400(self):
        with self.assertRaises(InvalidInput) as e:
            self.vial.run("cobol", code="DISPLAY 'HI'")
        self.assertEqual(e.exception.status, 400)
        self.assertEqual(e.exception.code, "invalid_input")
        self.assertTrue(e.exception.message)
        with self.assertRaises(InvalidInput):
            self.vial.run("python")  # neither code nor argv
        with self.assertRaises(InvalidInput):
            self.vial.run("python", code="1", timeout=0)

    def test_unknown_session_is_404(self):
        with self.assertRaises(NotFound) as e:
            self.vial.session("no-such-session")
        self.assertEqual((e.exception.status, e.exception.code), (404, "not_found"))


# The network tests talk only to servers they start themselves on 127.0.0.2 (loopback): a guest
# reaches one through a name vial answers itself (add_hosts) and an allow_cidrs rule for exactly
# that address. Nothing here resolves or reaches any other address.
GOOD_HOST = "good.test"
GOOD_IP = "127.0.0.2"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_http_server(body: bytes):
    """An HTTP server on 127.0.0.2 (a free port) in a thread; call .shutdown() when done."""
    server = http.server.ThreadingHTTPServer((GOOD_IP, 0), _Handler)
    server.body = body
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@needs_server
class NetworkTest(unittest.TestCase):
    def setUp(self):
        self.vial = VialClient(socket_path=SOCKET)
        self.body = b"hello from the host " + os.urandom(6).hex().encode()
        self.http = start_http_server(self.body)
        self.addCleanup(self.http.server_close)
        self.addCleanup(self.http.shutdown)
        self.port = self.http.server_address[1]
        self.network = {"allow_hosts": [GOOD_HOST], "add_hosts": {GOOD_HOST: GOOD_IP},
                        "allow_cidrs": [GOOD_IP + "/32"]}
        self.fetch = ("import urllib.request\n"
                      f"print(urllib.request.urlopen('http://{GOOD_HOST}:{self.port}/x', timeout=20).read().decode(), end='')\n")

    def test_run_fetches_from_an_allowed_host(self):
        r = self.vial.run("python", code=self.fetch, network=self.network)
        self.assertEqual(r["exit_code"], 0, r)
        self.assertEqual(r["stdout"], self.body.decode(), r)
        self.assertGreaterEqual(r["network"]["allowed"], 1, r)
        self.assertEqual(self.http.seen, [("/x", f"{GOOD_HOST}:{self.port}")])

    def test_run_stream_with_network(self):
        events = list(self.vial.run_stream("python", code=self.fetch, network=self.network))
        self.assertEqual(events[-1]["type"], "result", events)
        self.assertEqual("".join(e["data"] for e in events if e["type"] == "stdout"), self.body.decode(), events)
        self.assertGreaterEqual(events[-1]["network"]["allowed"], 1, events[-1])

    def test_without_network_nothing_is_reached(self):
        r = self.vial.run("python", code=self.fetch)
        self.assertNotEqual(r["exit_code"], 0, r)
        self.assertNotIn("network", r)
        self.assertEqual(self.http.seen, [])

    def test_invalid_network_names_the_field(self):
        with self.assertRaises(InvalidInput) as e:
            self.vial.run("python", code="print(1)", network={"allow_cidrs": ["10.0.0.1/8"]})
        self.assertEqual((e.exception.status, e.exception.code), (400, "invalid_input"))
        self.assertIn("network.allow_cidrs[0]", e.exception.message)
        with self.assertRaises(InvalidInput) as e:  # a one-shot run can't publish ports
            self.vial.run("python", code="print(1)", network={"ports": ["127.0.0.2:8080:80"]})
        self.assertIn("network.ports", e.exception.message)

    def test_session_port_in_use_is_409(self):
        # The host port is taken (by a listener of ours on 127.0.0.2): refused before any VM starts.
        with socket.socket() as taken:
            taken.bind((GOOD_IP, 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            with self.assertRaises(Conflict) as e:
                self.vial.create_session("python", network={"ports": [f"{GOOD_IP}:{port}:8000"]})
        self.assertEqual((e.exception.status, e.exception.code), (409, "conflict"))
        self.assertIn(str(port), e.exception.message)

    def test_session_with_network(self):
        network = dict(self.network, add_hosts=[f"{GOOD_HOST}:{GOOD_IP}"])
        with self.vial.create_session("python", network=network) as s:
            self.assertEqual(s.info["network"], {"enabled": True, "allow_hosts": [GOOD_HOST],
                                                 "allow_cidrs": [GOOD_IP + "/32"],
                                                 "add_hosts": {GOOD_HOST: GOOD_IP}, "ports": []})
            r = s.exec(code=self.fetch)
            self.assertEqual(r["stdout"], self.body.decode(), r)
            self.assertGreaterEqual(r["network"]["allowed"], 1, r)


class _WithSession(unittest.TestCase):
    """One python session for the whole class."""

    @classmethod
    def setUpClass(cls):
        cls.vial = VialClient(socket_path=SOCKET)
        cls.session = cls.vial.create_session("python")

    @classmethod
    def tearDownClass(cls):
        cls.session.__exit__(None, None, None)


@needs_server
class SessionTest(_WithSession):

    def test_state_is_kept_across_execs(self):
        self.assertEqual(self.session.exec(code="x = 41")["exit_code"], 0)
        r = self.session.exec(code="print(x + 1)")
        self.assertEqual(r["stdout"], "42\n", r)

    def test_binary_file_round_trip_and_listing(self):
        data = bytes(range(256)) * 512 + os.urandom(4096)
        reply = self.session.put_file("dir/data.bin", data, mode=0o600)
        self.assertEqual(reply["size"], len(data))
        self.assertEqual(self.session.get_file("dir/data.bin"), data)
        entries = {e["name"]: e for e in self.session.list_files("dir")}
        self.assertEqual(entries["data.bin"]["size"], len(data), entries)
        self.assertEqual(entries["data.bin"]["mode"] & 0o777, 0o600, entries)
        self.assertIn("dir", [e["name"] for e in self.session.list_files()])
        # The program sees the uploaded file too.
        r = self.session.exec(code="print(len(open('dir/data.bin', 'rb').read()))")
        self.assertEqual(r["stdout"], f"{len(data)}\n")

    def test_paths_leaving_the_home_are_400(self):
        for path in ("../etc/passwd", "/etc/passwd"):
            with self.assertRaises(InvalidInput, msg=path):
                self.session.get_file(path)

    def test_upload_over_the_limit_is_413(self):
        # Over the server's --max-file-mib 4 and its 16 MiB request limit: refused, maybe before
        # the client has sent it all.
        with self.assertRaises(TooLarge) as e:
            self.session.put_file("huge.bin", bytes(17 << 20))
        self.assertEqual(e.exception.status, 413)

    def test_missing_file_is_404(self):
        with self.assertRaises(NotFound):
            self.session.get_file("does-not-exist")

    def test_exec_stream(self):
        events = list(self.session.exec_stream(code=INTERLEAVED))
        self.assertEqual(events[-1]["type"], "result", events)
        self.assertEqual(merged_output(events[:-1]), EXPECTED_INTERLEAVING)
        self.assertEqual(self.session.refresh()["id"], self.session.id)  # still alive

    def test_listed(self):
        self.assertIn(self.session.id, [s["id"] for s in self.vial.sessions()])


class BytesDecodingTest(unittest.TestCase):
    def test_text_and_base64_forms(self):
        r = vial_client._result({"stdout": "h\u00e9\n", "stderr_base64": "//4K", "exit_code": 0})
        self.assertEqual(r["stdout"], "h\u00e9\n")
        self.assertEqual(r["stdout_bytes"], b"h\xc3\xa9\n")
        self.assertEqual(r["stderr_bytes"], b"\xff\xfe\n")
        self.assertEqual(r["stderr"], "\ufffd\ufffd\n")
        self.assertNotIn("stderr_base64", r)
        self.assertEqual(vial_client._result({"exit_code": 0}), {"exit_code": 0})  # streamed result

    def test_stdin_bytes_go_base64(self):
        self.assertEqual(vial_client._exec_body(None, "1", None, None, None, b"\xff", None),
                         {"code": "1", "stdin_base64": "/w=="})
        self.assertEqual(vial_client._exec_body(None, "1", None, None, None, "t", None), {"code": "1", "stdin": "t"})


@needs_server
class BytesTest(_WithSession):

    def check_result(self, r):
        self.assertEqual(r["stdout_bytes"], BINARY_STDOUT, r)
        self.assertEqual(r["stderr_bytes"], BINARY_STDERR, r)
        self.assertEqual(r["stdout"], BINARY_STDOUT.decode("utf-8", "replace"))

    def check_stream(self, events):
        self.assertEqual(events[-1]["type"], "result", events)
        self.assertEqual(streamed_bytes(events, "stdout"), BINARY_STDOUT, events)
        self.assertEqual(streamed_bytes(events, "stderr"), BINARY_STDERR, events)

    def test_run(self):
        self.check_result(self.vial.run("python", code=BINARY))
        r = self.vial.run("python", code="print('text')")
        self.assertEqual((r["stdout"], r["stdout_bytes"]), ("text\n", b"text\n"))

    def test_run_stream(self):
        self.check_stream(list(self.vial.run_stream("python", code=BINARY)))

    def test_run_stdin(self):
        self.assertEqual(self.vial.run("python", code=ECHO, stdin=BINARY_STDIN)["stdout_bytes"], BINARY_STDIN)
        events = list(self.vial.run_stream("python", code=ECHO, stdin=bytearray(BINARY_STDIN)))
        self.assertEqual(streamed_bytes(events, "stdout"), BINARY_STDIN)

    def test_run_over_tcp(self):
        if not URL:
            self.skipTest("no TCP endpoint")
        self.check_result(VialClient(base_url=URL, token=TOKEN).run("python", code=BINARY))

    def test_session(self):
        self.check_result(self.session.exec(code=BINARY))
        self.check_stream(list(self.session.exec_stream(code=BINARY)))
        self.assertEqual(self.session.exec(code=ECHO, stdin=BINARY_STDIN)["stdout_bytes"], BINARY_STDIN)
        self.session.put_file("bytes.bin", BINARY_STDIN)
        self.assertEqual(self.session.get_file("bytes.bin"), BINARY_STDIN)
        r = self.session.exec(code="import sys; sys.stdout.buffer.write(open('bytes.bin', 'rb').read())")
        self.assertEqual(r["stdout_bytes"], BINARY_STDIN)


@needs_server
class DeleteTest(unittest.TestCase):
    def test_deleted_session_is_gone(self):
        vial = VialClient(socket_path=SOCKET)
        with vial.create_session("python") as s:
            s.delete()
            with self.assertRaises(NotFound):
                s.exec(code="print(1)")
            with self.assertRaises(NotFound):
                vial.session(s.id)
        # __exit__ tolerated the session being gone already.
        self.assertNotIn(s.id, [x["id"] for x in vial.sessions()])


@needs_server
class HangUpTest(unittest.TestCase):
    def setUp(self):
        self.vial = VialClient(socket_path=SOCKET)

    def test_leaving_run_stream_early_cancels_the_run(self):
        events = self.vial.run_stream("python", code=SLEEPER)
        self.assertEqual(next(events)["type"], "stdout")
        events.close()
        self.assertTrue(wait_until(lambda: "vial_runs_in_flight 0\n" in self.vial.metrics()))

    def test_leaving_exec_stream_early_deletes_the_session(self):
        with self.vial.create_session("python") as s:
            events = s.exec_stream(code=SLEEPER)
            self.assertEqual(next(events)["type"], "stdout")
            with self.assertRaises(Conflict) as e:  # one exec at a time
                s.exec(code="print(1)")
            self.assertEqual(e.exception.status, 409)
            events.close()
            self.assertTrue(wait_until(lambda: s.id not in [x["id"] for x in self.vial.sessions()]))


@needs_server
class CapacityTest(unittest.TestCase):
    def test_full_server_answers_capacity_with_retry_after(self):
        # The server runs with --max-vms 2: two sessions fill it; a third waits for admission
        # (the server's queue deadline), then gets 503 capacity.
        vial = VialClient(socket_path=SOCKET)
        with vial.create_session("python"), vial.create_session("python"):
            with self.assertRaises(CapacityError) as e:
                vial.create_session("python")
        self.assertEqual((e.exception.status, e.exception.code), (503, "capacity"))
        self.assertGreater(e.exception.retry_after, 0)


@needs_server
class TcpTest(unittest.TestCase):
    def test_token_required(self):
        with self.assertRaises(vial_client.Unauthorized) as e:
            VialClient(base_url=URL).sessions()
        self.assertEqual(e.exception.status, 401)
        with self.assertRaises(vial_client.Forbidden) as e:
            VialClient(base_url=URL, token="wrong-token-wrong-token").sessions()
        self.assertEqual(e.exception.status, 403)
        self.assertEqual(VialClient(base_url=URL).health()["status"], "ok")  # healthz needs no token

    def test_run_with_token(self):
        r = VialClient(base_url=URL, token=TOKEN).run("python", code="print('over tcp')")
        self.assertEqual(r["stdout"], "over tcp\n", r)

    def test_stream_with_token(self):
        events = list(VialClient(base_url=URL, token=TOKEN).run_stream("python", code="print('s')"))
        self.assertEqual(events[-1]["type"], "result", events)
        self.assertEqual(merged_output(events[:-1]), [("stdout", "s\n")])


if __name__ == "__main__":
    unittest.main()
