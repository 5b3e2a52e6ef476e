"""Real HTTP servers on loopback that behave as slow, broken, hostile or flaky servers do.

`ImageServer` answers by path (see `ImageServer.PATHS`); every request is logged with its arrival time
and headers. `SilentServer` accepts connections into its backlog and never answers at all.
"""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

# Content that must never appear in any output: in bodies the server sends with errors and non-images.
SECRET_BODY = "TOP-SECRET-BODY-7f3a"
BASIC_USER, BASIC_PASSWORD = "reader", "p@ss:w0rd-SECRET"


class Request(NamedTuple):
    path: str
    at: float  # time.monotonic() when it arrived
    authorization: str | None


class ImageServer:
    """A threading HTTP server on 127.0.0.1 serving `images` ({name: bytes}) under these paths:

    /img/NAME                image; /private/NAME the same behind basic auth (BASIC_USER, BASIC_PASSWORD)
    /status/CODE             that status, with SECRET_BODY as body (and Retry-After: 0 for 429 and 503)
    /not-an-image            200 with SECRET_BODY as body
    /once/CODE/KEY/NAME      CODE the first time a KEY is asked for, then the image; CODE "reset" closes
                             the connection without answering; "429+5" is 429 with Retry-After: 5 (default 0)
    /outage/CODE/NAME        CODE (with Retry-After: 0) while `outage` is set, then the image: a host that is
                             down for a whole run and back for the next
    /stall-headers           the status line, then a header byte every 0.2 s, forever
    /trickle/NAME            headers, then a body byte every 0.1 s
    /hang                    reads the request and never answers
    /redirect?to=URL         302 to URL; /loop: 302 to itself; /chain/N/NAME: N redirects, then the image
    /huge-declared           Content-Length 10 GB; /huge-undeclared: 50 kB with no length
    """

    def __init__(self, images: dict[str, bytes], tls: ssl.SSLContext | None = None):
        self.images = images
        self.requests: list[Request] = []
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.outage = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def count(self, path: str) -> int:
        """How many requests for `path` (as sent, query included) arrived."""
        with self._lock:
            return sum(1 for request in self.requests if request.path == path)

    def first_time(self, key: str) -> bool:
        with self._lock:
            self._counts[key] += 1
            return self._counts[key] == 1

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


class _QuietServer(ThreadingHTTPServer):
    """Clients that give up mid-request (as deadlines make them) are expected, not errors to print."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def _handler_for(server: ImageServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (the name http.server calls)
            server.log(Request(self.path, time.monotonic(), self.headers.get("Authorization")))
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            head, rest = parts[0], parts[1:]
            if head == "img" and rest and rest[0] in server.images:
                self._send(200, server.images[rest[0]])
            elif head == "slow":  # /slow/SECONDS/NAME: the image, after a pause (a busy but healthy server)
                time.sleep(float(rest[0]))
                self._send(200, server.images[rest[1]])
            elif head == "private":
                expected = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self._send(401, SECRET_BODY.encode(), {"WWW-Authenticate": 'Basic realm="images"'})
                else:
                    self._send(200, server.images[rest[0]])
            elif head == "status":
                code = int(rest[0])
                self._send(code, SECRET_BODY.encode(), {"Retry-After": "0"} if code in (429, 503) else {})
            elif head == "not-an-image":
                self._send(200, (SECRET_BODY + " this is not an image\n").encode())
            elif head == "once":
                code, key, name = rest
                if not server.first_time(key):
                    self._send(200, server.images[name])
                elif code == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    self.close_connection = True
                    self.connection.close()
                else:
                    status, _, after = code.partition("+")
                    self._send(int(status), SECRET_BODY.encode(), {"Retry-After": after or "0"})
            elif head == "outage":
                code, name = rest
                if server.outage.is_set():
                    self._send(int(code), SECRET_BODY.encode(), {"Retry-After": "0"})
                else:
                    self._send(200, server.images[name])
            elif head == "stall-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._drip(b"X-Slow: " + b"a" * 10_000, 0.2)
            elif head == "trickle":
                body = server.images[rest[0]]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self._drip(body, 0.1)
            elif head == "hang":
                server.stopping.wait(120)
            elif head == "redirect":
                self._redirect(parse_qs(url.query)["to"][0])
            elif head == "loop":
                self._redirect("/loop")
            elif head == "chain":
                hops, name = int(rest[0]), rest[1]
                if hops == 0:
                    self._send(200, server.images[name])
                else:
                    self._redirect(f"/chain/{hops - 1}/{name}" if hops > 1 else f"/img/{name}")
            elif head == "huge-declared":
                self.send_response(200)
                self.send_header("Content-Length", str(10**10))
                self.end_headers()
                self.wfile.write(b"\0" * 1000)
            elif head == "huge-undeclared":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"\0" * 50_000)
                self.close_connection = True
            else:
                self._send(404, SECRET_BODY.encode())

        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self._send(302, b"", {"Location": location})

        def _drip(self, data: bytes, pause: float) -> None:
            try:
                for byte in data:
                    if server.stopping.is_set():
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(pause)
            except OSError:  # the client gave up
                pass
            self.close_connection = True

        def log_message(self, *args):
            pass

    return Handler


class SilentServer:
    """A listening socket on 127.0.0.1 that never accepts: connections succeed, and nothing ever answers."""

    def __init__(self):
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


def self_signed_certificate(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for `host` only (no IP address) and its key, as PEM files: (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
