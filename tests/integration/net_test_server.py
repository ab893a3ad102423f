#!/usr/bin/env python3
"""Local servers for the network tests (issue 13), on loopback addresses only.

Usage: net_test_server.py [--out FILE] [--lifetime SECONDS] ADDRESS [ADDRESS...]

On each ADDRESS (127.0.0.0/8 only) it serves, on ports the kernel picks:
  - HTTP: GET /hello -> "hello from ADDRESS", GET /big?mib=N -> N MiB of bytes,
    GET /simple/... -> a PEP 503 package index holding one wheel, vialdemo 1.0;
    every request's Host header is echoed in the X-Seen-Host response header;
  - HTTPS on another port (a self-signed certificate made with openssl at start):
    GET /hello -> "tls hello";
  - UDP: every datagram received is reported on stdout as "udp ADDRESS:PORT".
Every TCP connection accepted (HTTP or HTTPS, before any TLS handshake) is reported as
"tcp LOCAL_ADDRESS:LOCAL_PORT from PEER_ADDRESS:PEER_PORT".
Prints one JSON line {"ADDRESS": {"http": P, "https": P, "udp": P}, ...} then "ready",
and serves until stdin closes (the test ends) or 600 s pass.

--out FILE: write those lines to FILE (flushed at once) instead of stdout, so a test can read
them while the server runs, and errors to FILE.err instead of stderr. --lifetime SECONDS: stdin is not read (it may be /dev/null); the
server exits after SECONDS (the test kills it earlier when it ends).
The certificate's files are deleted as soon as they are loaded.
"""
import base64
import hashlib
import http.server
import io
import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import zipfile

OUT = sys.stdout
OUT_LOCK = threading.Lock()


def report(line):
    with OUT_LOCK:
        OUT.write(line + "\n")
        OUT.flush()

WHEEL_NAME = "vialdemo-1.0-py3-none-any.whl"


def make_wheel():
    files = {
        "vialdemo/__init__.py": b"GREETING = 'installed from the local index'\n",
        "vialdemo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: vialdemo\nVersion: 1.0\n",
        "vialdemo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: vial-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{name},sha256={digest},{len(data)}\n"
    record += "vialdemo-1.0.dist-info/RECORD,,\n"
    files["vialdemo-1.0.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


WHEEL = make_wheel()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
        super().setup()

    def reply(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/hello":
            what = "tls hello" if isinstance(self.connection, ssl.SSLSocket) else "hello from " + self.server.server_address[0]
            self.reply(what.encode())
        elif path == "/big":
            mib = int(self.path.split("mib=")[1]) if "mib=" in self.path else 1
            self.send_response(200)
            self.send_header("Content-Length", str(mib << 20))
            self.end_headers()
            chunk = b"v" * (1 << 20)
            try:
                for _ in range(mib):
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif path in ("/simple/", "/simple"):
            self.reply(b'<html><body><a href="/simple/vialdemo/">vialdemo</a></body></html>', "text/html")
        elif path == "/simple/vialdemo/":
            sha = hashlib.sha256(WHEEL).hexdigest()
            self.reply(f'<html><body><a href="/files/{WHEEL_NAME}#sha256={sha}">{WHEEL_NAME}</a></body></html>'.encode(),
                       "text/html")
        elif path == f"/files/{WHEEL_NAME}":
            self.reply(WHEEL, "application/octet-stream")
        else:
            self.send_error(404)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many concurrent connects (the connection-limit test)

    def server_bind(self):
        # HTTPServer.server_bind would look the address up with getfqdn (a reverse DNS query).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        conn, peer = self.socket.accept()
        local = conn.getsockname()
        report(f"tcp {local[0]}:{local[1]} from {peer[0]}:{peer[1]}")
        if self.tls_context is not None:
            # The handshake happens in the connection's thread (Handler.setup), so a client
            # that never sends its ClientHello does not stall the accept loop.
            conn = self.tls_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, peer

    def handle_error(self, request, client_address):
        print(f"error serving {client_address}: {sys.exc_info()[1]!r}", file=sys.stderr, flush=True)


def serve_udp(sock):
    while True:
        try:
            _, peer = sock.recvfrom(2048)
        except OSError:
            return
        report(f"udp {peer[0]}:{peer[1]}")


def main():
    global OUT
    args = sys.argv[1:]
    lifetime = None
    while args and args[0].startswith("--"):
        if args[0] == "--out" and len(args) > 1:
            OUT = open(args[1], "a", encoding="utf-8")
            # Errors too go to a file: a pipe nobody reads would fill up and stall the server.
            sys.stderr = open(args[1] + ".err", "a", encoding="utf-8", buffering=1)
        elif args[0] == "--lifetime" and len(args) > 1:
            lifetime = float(args[1])
        else:
            sys.exit(f"unknown option {args[0]}")
        args = args[2:]
    addresses = args
    for a in addresses:
        if not a.startswith("127."):
            sys.exit(f"refusing to listen on {a}: loopback only")
    tmp = tempfile.mkdtemp(prefix="vial-net-test-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=good.test",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for f in (cert, key):
        os.unlink(f)
    os.rmdir(tmp)
    ports = {}
    for a in addresses:
        http_srv = Server((a, 0), Handler)
        http_srv.tls_context = None
        https_srv = Server((a, 0), Handler)
        https_srv.tls_context = ctx
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((a, 0))
        for target, arg in ((http_srv.serve_forever, ()), (https_srv.serve_forever, ()), (serve_udp, (udp,))):
            threading.Thread(target=target, args=arg, daemon=True).start()
        ports[a] = {"http": http_srv.server_address[1], "https": https_srv.server_address[1],
                    "udp": udp.getsockname()[1]}
    report(json.dumps(ports))
    report("ready")
    timer = threading.Timer(lifetime if lifetime is not None else 600, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    if lifetime is not None:
        timer.join()
    else:
        sys.stdin.read()


if __name__ == "__main__":
    main()
