"""A real HTTP server on 127.0.0.1 for tests, configurable per path.

Usage::

    with FeedServer() as server:
        server.route("/feed.xml", Response(body=b"<rss .../>", etag='"v1"'))
        server.redirect("/old", "/feed.xml", status=301)
        url = server.url("/feed.xml")
        ...
        assert server.requests_to("/feed.xml")[0].headers["user-agent"] == "..."

Each route answers with a ``Response``: status, headers and bytes (or a
callable producing chunks, sent with chunked encoding: good for endless or
huge bodies, which are generated only as fast as the client reads). It can
delay before answering, trickle the headers or the body byte by byte, and
answer conditional GETs with 304 (``etag`` / ``last_modified``). A route may
instead be a callable ``(RecordedRequest) -> Response``. Unknown paths get 404.
Every request is recorded with lower-cased headers.

The server runs in a background thread; handler threads are woken (sleeps are
interruptible, open connections are shut down) and joined on ``stop()``, so
tests leave no threads or sockets behind. No third-party dependencies.
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FeedServer", "RecordedRequest", "Response"]

Body = bytes | Callable[[], Iterable[bytes]]


@dataclass
class Response:
    """What one route answers."""

    status: int = 200
    body: Body = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # sent as ETag; a matching If-None-Match gets 304
    last_modified: str | None = None  # sent as Last-Modified; If-Modified-Since >= it gets 304
    delay: float = 0.0  # seconds to wait before answering at all
    header_trickle: float | None = None  # seconds between bytes of status line and headers
    trickle: float | None = None  # seconds between bytes of the body
    reason: str | None = None  # reason phrase; the standard one by default


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str  # without the query
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client: tuple[str, int]


Route = Response | Callable[[RecordedRequest], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads
    owner: FeedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response are expected (timeouts, size caps);
        # anything else (a route callable that raised) is kept for the test to see.
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, (ConnectionError, socket.timeout)):
            self.owner.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 10  # idle keep-alive connections do not outlive a test for long

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def _answer(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
            client=self.client_address,
        )
        route = owner._record(request)
        if route is None:
            response = Response(status=404, body=b"not found")
        elif isinstance(route, Response):
            response = route
        else:
            response = route(request)
        if response.delay and owner._stopping.wait(response.delay):
            self.close_connection = True
            return
        self._send(request, response)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

    def _not_modified(self, request: RecordedRequest, response: Response) -> bool:
        if response.status != 200:
            return False
        if response.etag is not None and "if-none-match" in request.headers:
            tags = {tag.strip() for tag in request.headers["if-none-match"].split(",")}
            return response.etag in tags or "*" in tags
        since = request.headers.get("if-modified-since")
        if response.last_modified is not None and since:
            try:
                return email.utils.parsedate_to_datetime(since) >= email.utils.parsedate_to_datetime(
                    response.last_modified
                )
            except (TypeError, ValueError):
                return since == response.last_modified
        return False

    def _write(self, data: bytes, pause: float | None) -> bool:
        """Send ``data`` (byte by byte with ``pause`` between); False once stopping."""
        if not pause:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        for index in range(len(data)):
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            if self.server.owner._stopping.wait(pause):
                return False
        return True

    def _send(self, request: RecordedRequest, response: Response) -> None:
        status = 304 if self._not_modified(request, response) else response.status
        reason = response.reason
        if reason is None:
            reason = self.responses.get(status, ("",))[0]
        headers = dict(response.headers)
        if response.etag is not None:
            headers.setdefault("ETag", response.etag)
        if response.last_modified is not None:
            headers.setdefault("Last-Modified", response.last_modified)
        body = response.body
        chunked = False
        if status == 304 or request.method == "HEAD":
            payload = b""
            if status == 304:
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length",)}
        elif callable(body):
            chunked = True
            headers["Transfer-Encoding"] = "chunked"
            payload = b""
        else:
            payload = body
            if not any(k.lower() == "content-length" for k in headers):
                headers["Content-Length"] = str(len(payload))
        lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if not self._write(head, response.header_trickle):
                self.close_connection = True
                return
            if chunked:
                assert callable(body)
                for chunk in body():
                    if self.server.owner._stopping.is_set():
                        self.close_connection = True
                        return
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            elif payload and request.method != "HEAD" and not self._write(payload, response.trickle):
                self.close_connection = True
        except OSError:  # the client hung up (timeouts, size caps)
            self.close_connection = True


class FeedServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with per-path responses."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._routes: dict[str, Route] = {}
        self._requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # exceptions raised while answering
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FeedServer:
        server = _Server((self._host, 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="feedserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins handler threads
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- configuration

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, response: Route | None = None, **fields: Any) -> None:
        """Answer ``path`` with ``response`` (or ``Response(**fields)``)."""
        with self._lock:
            self._routes[path] = response if response is not None else Response(**fields)

    def redirect(self, path: str, to: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect to ``to`` (absolute, or a path on this server)."""
        self.route(path, Response(status=status, headers={"Location": to}))

    # -- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    # -- used by the handler

    def _record(self, request: RecordedRequest) -> Route | None:
        with self._lock:
            self._requests.append(request)
            return self._routes.get(request.path)

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
