"""The explorer's HTTP layer: the standard library's ThreadingHTTPServer, a JSON API and the page's assets.

Routes (anything else is a 404, a known route with another method a 405):
    GET  /, /app.js, /style.css   the page, from the package's static folder by a fixed name table
    GET  /api/info                the model, its classes, K, top-k and the λ range
    GET  /api/sample?index=N      explain test image N (its source id is `test-N`)
    POST /api/upload              explain an uploaded image file (raw bytes as the body)
    POST /api/render              {"source": id, "lambdas": {"12": 2.5}} -> the edited render, g's and f's
                                  predictions on it
Every refusal is a 4xx with `{"error": "<one line>"}` and the server keeps serving; a bug is a 500 in the
same shape (and a traceback on stderr). Bodies are refused from their Content-Length before any byte is
read (413), and a connection whose body was not read is closed after the answer. On a loopback address
the server also refuses requests whose Host is not a loopback name (a DNS-rebinding page cannot reach it).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import socketserver
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from viscoin_cli.errors import one_line
from viscoin_cli.serve.explorer import Explorer, RequestError

MAX_UPLOAD_BYTES = 8 * 2**20
MAX_JSON_BYTES = 64 * 2**10
DRAIN_BYTES, DRAIN_SECONDS = 2**20, 1.0  # read after refusing a body, so that the client sees the answer
REQUEST_TIMEOUT = 30  # seconds a client may stall mid-request before its thread gives up on it

# route -> (file in static/, content type): the only files the server ever reads after start-up
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
API = {"/api/info": "GET", "/api/sample": "GET", "/api/upload": "POST", "/api/render": "POST"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the package (route -> (bytes, content type))."""
    folder = resources.files("viscoin_cli.serve") / "static"
    return {route: ((folder / name).read_bytes(), kind) for route, (name, kind) in STATIC.items()}


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the explorer and the page's assets."""

    daemon_threads = True  # a kept-alive browser connection must not hold the process open
    block_on_close = False

    def __init__(self, address: tuple[str, int], explorer: Explorer | None, *, log_errors: bool = True):
        self.explorer = explorer
        self.assets = load_assets()
        self.log_errors = log_errors
        self.loopback = is_loopback(address[0])
        super().__init__(address, ExplorerHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds without DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def url(self) -> str:
        """The page's address; on every interface (0.0.0.0, ::), the loopback one of this machine."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.server_name, self.server_name)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server_port}/"


def make_server(
    explorer: Explorer | None, host: str = "127.0.0.1", port: int = 0, *, log_errors: bool = True
) -> ExplorerServer:
    """An ExplorerServer bound to (host, port) (port 0: a free one), IPv4 or IPv6 as `host` resolves.

    The explorer may be set later (`server.explorer = ...`, before `serve_forever`): binding first makes a
    busy port fail before the model loads. Raises OSError when the host does not resolve or the port cannot
    be bound.
    """
    family = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][0]
    server_class = type("ExplorerServer6", (ExplorerServer,), {"address_family": family})
    return server_class((host, port), explorer, log_errors=log_errors)


class ExplorerHandler(BaseHTTPRequestHandler):
    """One request: route, validate, answer JSON (or an asset). Never raises out of a request."""

    server: ExplorerServer
    protocol_version = "HTTP/1.1"  # keep-alive: a slider sends a request per step
    server_version = "viscoin-explorer"
    sys_version = ""
    timeout = REQUEST_TIMEOUT
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle + delayed ACK would add 40 ms

    # --- plumbing ---------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        pass  # errors are logged in `_fail`; a slider would flood the terminal with request lines

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (malformed request line, header too long, ...) as JSON too."""
        del explain  # the one-line message is the whole answer
        self.close_connection = True
        self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _unread(self) -> int:
        """Bytes of the request body not yet read (what the client announced, less what was read)."""
        return getattr(self, "_pending", 0)

    def _send(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        if self._unread():  # the body was refused unread: it would be taken for the next request
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if kind.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self._unread():
            self._drain()

    def _send_json(self, status: int, document: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        body = json.dumps(document, allow_nan=False, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", extra)

    def _drain(self) -> None:
        """Read (and drop) a bounded part of a refused body after the answer, so that closing the socket
        sends a FIN, not a reset that could destroy the answer before the client reads it."""
        self._pending = 0
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_SECONDS)
            left, deadline = DRAIN_BYTES, time.monotonic() + DRAIN_SECONDS
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _fail(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        if self.server.log_errors:
            sys.stderr.write(f"{self.command} {self.path[:200]}: {status} {message}\n")
        self._send_json(status, {"error": message}, extra)

    # --- routing ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def __getattr__(self, name: str) -> Any:
        """Any other method (PUT, DELETE, BREW, ...) is routed too: a 405 or 404 in JSON, not the base's 501."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue` (curl's large uploads): refuse an oversized body before it is sent."""
        try:
            self._pending = 0
            self._body_length(self._limit(urlsplit(self.path).path))
        except RequestError as err:
            self.close_connection = True
            self._fail(err.status, err.message)
            return False
        return super().handle_expect_100()

    def _handle(self) -> None:
        self._pending = self._announced()
        try:
            self._check_host()
            self._route()
        except RequestError as err:
            extra = {"Allow": API.get(urlsplit(self.path).path, "GET, HEAD")} if err.status == 405 else None
            self._fail(err.status, err.message, extra)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # a bug: answer, say so on stderr, keep serving
            traceback.print_exc(file=sys.stderr)
            self._fail(500, f"internal error: {one_line(err, 200)}")

    def _announced(self) -> int:
        """The body's announced length; 1 for a body of unknown length (chunked, a bad Content-Length), which
        is never read: the connection is closed after the answer so that it is not taken for a request."""
        if self.headers.get("Transfer-Encoding"):
            return 1
        text = self.headers.get("Content-Length", "0").strip()
        return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else 1

    def _check_host(self) -> None:
        if not self.server.loopback:
            return
        host = self.headers.get("Host")
        if host is None:
            return  # HTTP/1.0 without Host: it did not come from a browser page
        name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        if not is_loopback(name):
            raise RequestError(421, f"Host {host[:60]!r}: this explorer answers only to localhost")

    def _route(self) -> None:
        url = urlsplit(self.path)
        path, method = url.path, self.command
        if path in STATIC:
            if method not in ("GET", "HEAD"):
                raise RequestError(405, f"{method} {path}: only GET is allowed")
            body, kind = self.server.assets[path]
            self._send(200, body, kind)
            return
        if path not in API:
            raise RequestError(404, f"no such route: {path[:80]}")
        if method != API[path]:
            raise RequestError(405, f"{method} {path}: only {API[path]} is allowed")
        explorer = self.server.explorer
        query = self._query(url.query, allowed=("index",) if path == "/api/sample" else ())
        if path == "/api/info":
            self._send_json(200, {**explorer.info(), "max_upload_bytes": MAX_UPLOAD_BYTES})
        elif path == "/api/sample":
            self._send_json(200, explorer.sample(_index(query)))
        elif path == "/api/upload":
            self._send_json(200, explorer.upload(self._read_body(MAX_UPLOAD_BYTES, "upload")))
        else:
            request = self._read_json()
            self._send_json(200, explorer.render(request.get("source"), request.get("lambdas", {})))

    @staticmethod
    def _query(text: str, allowed: tuple[str, ...]) -> dict[str, str]:
        try:
            fields = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=8)
        except ValueError:
            raise RequestError(400, "malformed query string") from None
        for name, values in fields.items():
            if name not in allowed:
                raise RequestError(400, f"unknown parameter {name[:40]!r}")
            if len(values) > 1:
                raise RequestError(400, f"parameter {name!r} given more than once")
        return {name: values[0] for name, values in fields.items()}

    # --- bodies -----------------------------------------------------------------------------------------

    @staticmethod
    def _limit(path: str) -> tuple[int, str]:
        return (MAX_UPLOAD_BYTES, "upload") if path == "/api/upload" else (MAX_JSON_BYTES, "request body")

    def _body_length(self, limit: tuple[int, str]) -> int:
        """The announced body length, checked against `limit` before a byte of the body is read."""
        most, what = limit
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "send a Content-Length: chunked bodies are not accepted")
        text = self.headers.get("Content-Length")
        if text is None:
            raise RequestError(411, "send a Content-Length with the body")
        if not re.fullmatch(r"[0-9]{1,18}", text.strip()):
            raise RequestError(400, f"Content-Length {text[:30]!r} is not a byte count")
        length = int(text)
        if length > most:
            raise RequestError(413, f"{what} too large: {length} bytes, the limit is {_size(most)}")
        return length

    def _read_body(self, most: int, what: str) -> bytes:
        length = self._body_length((most, what))
        data = self.rfile.read(length)
        self._pending = 0 if len(data) == length else length - len(data)
        if len(data) < length:
            raise RequestError(400, f"the body ended after {len(data)} of its {length} bytes")
        return data

    def _read_json(self) -> dict[str, Any]:
        data = self._read_body(MAX_JSON_BYTES, "request body")
        try:
            request = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise RequestError(400, f"malformed JSON: {one_line(err, 120)}") from None
        if not isinstance(request, dict):
            raise RequestError(400, 'expected a JSON object {"source": ..., "lambdas": {...}}')
        unknown = sorted(set(request) - {"source", "lambdas"})
        if unknown:
            raise RequestError(400, f"unknown field {unknown[0][:40]!r} (expected source and lambdas)")
        return request


def _index(query: dict[str, str]) -> int:
    text = query.get("index")
    if text is None:
        raise RequestError(400, "index: missing (GET /api/sample?index=N)")
    if not re.fullmatch(r"[0-9]{1,9}", text):
        if any(mark in text for mark in ("/", "\\", "..")):
            raise RequestError(400, "index: a path is not an index; give a test-split image number")
        raise RequestError(400, f"index: {text[:40]!r} is not a non-negative integer")
    return int(text)


def _size(count: int) -> str:
    return f"{count // 2**20} MB" if count >= 2**20 else f"{count // 2**10} KB"
