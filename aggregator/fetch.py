"""Fetching feed documents over HTTP(S) or from local files.

What this module does
    ``fetch(url, ...)`` returns a ``FetchResult`` (status, final URL, body,
    lower-cased headers, validators, permanent redirect) or raises a
    ``FetchError`` whose ``message`` is short enough to store as a feed's
    ``last_error``. It enforces the fetch policy on every hop:

    * only http/https (and, when allowed, ``file://`` URLs and plain paths);
    * redirects are followed by hand, at most ``MAX_REDIRECTS``, each target
      checked again; a chain of permanent redirects (301/308) from the start
      is reported in ``permanent_redirect``;
    * unless ``allow_private``, every address a host resolves to must be public
      (no loopback, private, link-local, shared, multicast, reserved,
      unspecified, nor IPv4-mapped/6to4/NAT64 forms of those). With our own
      transport (``make_client``) the check happens at connect time on the
      very addresses the socket connects to, so DNS rebinding between check
      and connect is impossible; the hostname, Host header, SNI and
      certificate check are untouched;
    * ``timeout`` is a total deadline for the whole fetch (connect, TLS,
      headers, body, every redirect): each socket read/write is given only the
      time left, so a server trickling a byte a second is cut off in time;
    * ``max_bytes`` caps the *decompressed* body. gzip/deflate are decoded
      here, incrementally, with zlib's ``max_length``, so a gzip bomb never
      produces more than ``max_bytes + 1`` bytes in memory;
    * conditional GET with ETag / Last-Modified; 304 gives ``body=None``.

    Policy decisions (URL kinds, address checks, redirect targets, request
    headers, size formatting) are pure functions below; the I/O shell is
    ``fetch``, ``_fetch_http``, ``_fetch_file`` and the guarded transport.

What it must not do
    No parsing of feed content, no storage, no scheduling, no retries (the
    scheduler backs off). This is the only module that imports ``httpx`` (and
    ``httpcore``, its transport layer).

Known gaps
    * DNS resolution (``getaddrinfo``) is blocking and not bounded by the
      deadline (the system resolver's own timeouts apply).
    * A caller-supplied ``client`` that was not built by ``make_client`` gets
      the address check before each hop (so a DNS answer could change between
      check and connect), and the deadline is enforced between body chunks and
      by per-read timeouts only.
    * Proxies from the environment are ignored (``trust_env=False``): a proxy
      would make the address check meaningless.
"""

from __future__ import annotations

import contextvars
import email.utils
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urljoin, urlsplit

import httpcore
import httpx

from aggregator.models import FetchResult

__all__ = [
    "ACCEPT",
    "MAX_REDIRECTS",
    "FetchError",
    "FetchTimeout",
    "ForbiddenAddressError",
    "HTTPStatusError",
    "TooLargeError",
    "TooManyRedirects",
    "fetch",
    "file_path",
    "format_size",
    "is_public_address",
    "make_client",
    "redirect_target",
    "request_headers",
    "url_kind",
]

MAX_REDIRECTS = 5
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, application/json;q=0.8, text/html;q=0.3, */*;q=0.1"
)
ACCEPT_ENCODING = "gzip, deflate"  # the codings _Decoder handles
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})


# --------------------------------------------------------------------------- errors


class FetchError(Exception):
    """A fetch failed; ``message`` is a short, human-readable reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HTTPStatusError(FetchError):
    """The server answered with a 4xx/5xx (or an unusable 3xx) status."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Mapping[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        reason = reason or _reason(status)
        super().__init__(message or f"HTTP {status} {reason}".strip())
        self.status = status
        self.reason = reason
        self.headers: dict[str, str] = dict(headers or {})  # lower-cased; e.g. retry-after

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


class FetchTimeout(FetchError):
    """The whole fetch took longer than its deadline."""


class TooLargeError(FetchError):
    """The (decompressed) body is larger than ``max_bytes``."""


class ForbiddenAddressError(FetchError):
    """The host resolves to a non-public address and ``allow_private`` is off."""


class TooManyRedirects(FetchError):
    """More than ``MAX_REDIRECTS`` redirects, or a redirect loop."""


# --------------------------------------------------------------------------- pure decisions

_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def format_size(n: int) -> str:
    """``10485760`` -> ``"10 MiB"``; ``1500`` -> ``"1500 bytes"``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n} bytes"


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g} s"


def url_kind(url: str) -> Literal["http", "file"]:
    """``"http"`` for http(s) URLs, ``"file"`` for ``file:`` URLs and plain paths.

    Raises ``FetchError`` for an empty URL or any other scheme (ftp:, data:, ...).
    """
    text = url.strip()
    if not text:
        raise FetchError("empty URL")
    match = _SCHEME_RE.match(text)
    if match is None:
        return "file"
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file":
        return "file"
    raise FetchError(f"unsupported URL scheme {scheme!r} in {text}")


def file_path(url: str) -> Path:
    """The absolute, normalised path named by a ``file:`` URL or a plain path."""
    text = url.strip()
    if _SCHEME_RE.match(text):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file URL with a remote host is not supported: {text}")
        text = unquote(parts.path)
        if not text:
            raise FetchError(f"file URL without a path: {url.strip()}")
    return Path(os.path.abspath(text))


def request_headers(
    *, user_agent: str, etag: str | None = None, last_modified: str | None = None
) -> dict[str, str]:
    """The request headers of a (conditional) feed GET."""
    headers = {
        "User-Agent": user_agent,
        "Accept": ACCEPT,
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def is_public_address(address: str) -> bool:
    """True when ``address`` (an IP literal) is a globally routable unicast address.

    False for loopback, private, shared (CGNAT), link-local, multicast,
    reserved, unspecified and documentation ranges, for IPv6 forms embedding
    such an IPv4 address (IPv4-mapped, 6to4, NAT64, IPv4-compatible), and for
    anything that is not an IP address.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(str(embedded))
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_private
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_reserved
        and not ip.is_unspecified
    )


def forbidden_address(host: str, addresses: Iterable[str]) -> str | None:
    """The refusal message when any address of ``host`` is not public, else None."""
    for address in addresses:
        if not is_public_address(address):
            shown = address if host.strip("[]") == address else f"{host} ({address})"
            return f"refusing to fetch private address {shown}; set allow_private"
    return None


def redirect_target(current_url: str, location: str) -> str:
    """The absolute URL a ``Location`` header points to (fragment dropped)."""
    return urljoin(current_url, location.strip()).split("#", 1)[0]


# --------------------------------------------------------------------------- guarded transport


@dataclass(frozen=True)
class _Guard:
    """Per-fetch policy seen by the transport (set for the fetching thread)."""

    deadline: float  # time.monotonic() value
    timeout: float
    allow_private: bool

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_GUARD: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("aggregator_fetch_guard", default=None)


def _clamp(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of the current fetch's deadline."""
    guard = _GUARD.get()
    if guard is None:
        return timeout
    remaining = guard.remaining()
    if remaining <= 0:
        raise expired(f"timed out after {_format_seconds(guard.timeout)}")
    return remaining if timeout is None else min(timeout, remaining)


def _resolve(host: str, port: int) -> list[str]:
    """Addresses of ``host`` in resolver order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise FetchError(f"cannot resolve host {host}: {reason}") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchError(f"cannot resolve host {host}: no addresses")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose reads and writes never outlive the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks and connects to the same addresses (no DNS rebinding window)."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        guard = _GUARD.get()
        addresses = _resolve(host, port)
        if guard is None or not guard.allow_private:  # outside fetch(): the safe default
            refusal = forbidden_address(host, addresses)
            if refusal is not None:
                raise ForbiddenAddressError(refusal)
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    timeout=_clamp(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream)
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the fetcher")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_SSL_CONTEXT: ssl.SSLContext | None = None
_SSL_LOCK = threading.Lock()


def _ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every client shares (certifi's CAs, no environment).

    Building one loads the CA bundle, ~40 ms of CPU: once per process, not per
    fetch. An ``SSLContext`` is safe to share between threads and is never
    changed after this.
    """
    global _SSL_CONTEXT
    with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            _SSL_CONTEXT = httpx.create_ssl_context(trust_env=False)
        return _SSL_CONTEXT


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool that uses ``_GuardedBackend``.

    httpx does not take a network backend, so the pool it builds is swapped
    for an identical one that does (``_pool`` is httpx 0.28's attribute; the
    constructor fails loudly if that ever changes).
    """

    def __init__(self, *, max_connections: int = 20) -> None:
        context = _ssl_context()
        super().__init__(verify=context, trust_env=False, retries=0)
        original = getattr(self, "_pool", None)
        if not isinstance(original, httpcore.ConnectionPool):  # pragma: no cover - httpx changed
            raise RuntimeError("unsupported httpx version: HTTPTransport has no _pool")
        original.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_GuardedBackend(),
        )


Client = httpx.Client  # what ``make_client`` returns, for annotations elsewhere (httpx stays here)


def make_client(*, max_connections: int = 20) -> httpx.Client:
    """An ``httpx.Client`` with the guarded transport, to share between fetches.

    Thread-safe for concurrent ``fetch`` calls (each carries its own policy and
    deadline). The caller closes it. ``fetch`` builds a private one when given
    none.
    """
    return httpx.Client(
        transport=_GuardedTransport(max_connections=max_connections),
        follow_redirects=False,
        trust_env=False,
    )


# --------------------------------------------------------------------------- bodies


class _Decoder:
    """Incremental gzip/deflate decoding that never yields more than asked for."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._decompressor: Any = self._new()
        self._first = True

    def _new(self) -> Any:
        if self._coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS)  # deflate: zlib-wrapped, raw as fallback

    def decode(self, data: bytes, limit: int) -> bytes:
        """Decode ``data``, producing at most ``limit`` bytes (more means too large)."""
        out = bytearray()
        while data and len(out) < limit:
            try:
                piece = self._decompressor.decompress(data, limit - len(out))
            except zlib.error:
                if self._coding == "deflate" and self._first:
                    # "deflate" sent as a raw stream (no zlib header), as some servers do
                    self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise
            self._first = False
            out += piece
            if self._decompressor.unconsumed_tail:
                data = self._decompressor.unconsumed_tail  # the limit was reached
                if len(out) >= limit:
                    break
            elif self._decompressor.eof and self._decompressor.unused_data:
                data = self._decompressor.unused_data  # another gzip member
                self._decompressor = self._new()
            else:
                data = b""
        return bytes(out)

    def flush(self) -> bytes:
        return bytes(self._decompressor.flush())


def _decoders(content_encoding: str | None) -> list[_Decoder]:
    """Decoders to apply, in order, for a ``Content-Encoding`` header value."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    decoders: list[_Decoder] = []
    for coding in reversed(codings):  # the last coding applied is undone first
        if coding in ("identity", "none"):
            continue
        if coding in ("gzip", "x-gzip"):
            decoders.append(_Decoder("gzip"))
        elif coding == "deflate":
            decoders.append(_Decoder("deflate"))
        else:
            raise FetchError(f"unsupported content encoding {coding!r}")
    return decoders


def _too_large(max_bytes: int) -> TooLargeError:
    return TooLargeError(f"response larger than {format_size(max_bytes)} limit")


def _read_body(chunks: Iterator[bytes], decoders: list[_Decoder], max_bytes: int, guard: _Guard) -> bytes:
    """The decoded body, aborting as soon as it exceeds ``max_bytes`` or the deadline."""
    body = bytearray()
    raw_total = 0
    try:
        for chunk in chunks:
            raw_total += len(chunk)
            if raw_total > max_bytes:
                raise _too_large(max_bytes)
            data = chunk
            for decoder in decoders:
                data = decoder.decode(data, max_bytes - len(body) + 1)
            body += data
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
            if guard.remaining() <= 0:
                raise FetchTimeout(f"timed out after {_format_seconds(guard.timeout)}")
        for index, decoder in enumerate(decoders):
            data = decoder.flush()
            for later in decoders[index + 1 :]:
                data = later.decode(data, max_bytes - len(body) + 1)
            body += data
    except zlib.error as exc:
        raise FetchError(f"invalid compressed response: {exc}") from exc
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    return bytes(body)


# --------------------------------------------------------------------------- fetching


def _lower_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _connect_message(exc: Exception, url: str) -> str:
    reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip() or type(exc).__name__
    host = urlsplit(url).hostname or url
    return f"cannot connect to {host}: {reason}"


def _fetch_http(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    max_bytes: int,
    user_agent: str,
    guard: _Guard,
) -> FetchResult:
    headers = request_headers(user_agent=user_agent, etag=etag, last_modified=last_modified)
    current = url.strip()
    visited = [current]
    permanent: str | None = None
    permanent_chain = True  # every hop so far was permanent
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            target = httpx.URL(current)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise FetchError(f"invalid URL {current}: {exc}") from exc
        if target.scheme not in ("http", "https") or not target.host:
            raise FetchError(f"invalid URL {current}")
        if not guard.allow_private:
            # Early, clear refusal (and the only check for foreign clients);
            # the guarded transport checks again at connect time.
            host = target.raw_host.decode("ascii", "replace")
            port = target.port or (443 if target.scheme == "https" else 80)
            refusal = forbidden_address(host, _resolve(host, port))
            if refusal is not None:
                raise ForbiddenAddressError(refusal)
        remaining = guard.remaining()
        if remaining <= 0:
            raise FetchTimeout(f"timed out after {_format_seconds(guard.timeout)}")
        request = client.build_request("GET", target, headers=headers, timeout=httpx.Timeout(remaining))
        try:
            response = client.send(request, stream=True, follow_redirects=False)
        except httpx.InvalidURL as exc:
            # httpx pre-builds the next request of every redirect, even when not
            # following it, and fails on Locations it cannot represent.
            raise FetchError(f"refusing to follow redirect from {current}: invalid Location ({exc})") from exc
        except httpx.RemoteProtocolError as exc:
            if "location" in str(exc).lower():
                raise FetchError(f"refusing to follow redirect from {current}: {exc}") from exc
            raise
        try:
            status = response.status_code
            response_headers = _lower_headers(response.headers)
            if status in REDIRECT_STATUSES:
                location = response_headers.get("location", "").strip()
                if not location:
                    raise HTTPStatusError(
                        status,
                        response.reason_phrase,
                        response_headers,
                        f"HTTP {status} redirect without a Location header",
                    )
                next_url = redirect_target(current, location)
                scheme_match = _SCHEME_RE.match(next_url)
                if scheme_match is None or scheme_match.group(1).lower() not in ("http", "https"):
                    raise FetchError(f"refusing to follow redirect to {next_url} (only http and https)")
                if permanent_chain and status in PERMANENT_REDIRECT_STATUSES:
                    permanent = next_url
                else:
                    permanent_chain = False
                current = next_url
                visited.append(current)
                continue
            if status == 304:
                return FetchResult(
                    status=304,
                    url=current,
                    body=None,
                    headers=response_headers,
                    etag=response_headers.get("etag") or etag,
                    last_modified=response_headers.get("last-modified") or last_modified,
                    permanent_redirect=permanent,
                )
            if not 200 <= status < 300:
                raise HTTPStatusError(status, response.reason_phrase, response_headers)
            length = response_headers.get("content-length", "").strip()
            if length.isdigit() and int(length) > max_bytes:
                raise _too_large(max_bytes)
            decoders = _decoders(response_headers.get("content-encoding"))
            body = _read_body(response.iter_raw(), decoders, max_bytes, guard)
            return FetchResult(
                status=status,
                url=current,
                body=body,
                headers=response_headers,
                etag=response_headers.get("etag"),
                last_modified=response_headers.get("last-modified"),
                permanent_redirect=permanent,
            )
        finally:
            response.close()
    if len(set(visited)) < len(visited):
        raise TooManyRedirects(f"redirect loop ({' -> '.join(visited[:4])} ...)")
    raise TooManyRedirects(f"too many redirects (more than {MAX_REDIRECTS})")


def _file_validators(info: os.stat_result) -> tuple[str, str]:
    etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
    return etag, email.utils.formatdate(info.st_mtime, usegmt=True)


def _fetch_file(url: str, *, etag: str | None, last_modified: str | None, max_bytes: int) -> FetchResult:
    path = file_path(url)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FetchError(f"file not found: {path}") from None
    except OSError as exc:
        raise FetchError(f"cannot read file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise FetchError(f"not a regular file: {path}")
    if info.st_size > max_bytes:
        raise _too_large(max_bytes)
    file_etag, file_modified = _file_validators(info)
    headers = {"etag": file_etag, "last-modified": file_modified}
    if (etag and etag == file_etag) or (not etag and last_modified and last_modified == file_modified):
        return FetchResult(
            status=304,
            url=path.as_uri(),
            body=None,
            headers=headers,
            etag=file_etag,
            last_modified=file_modified,
        )
    try:
        with open(path, "rb") as handle:
            body = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FetchError(f"cannot read file {path}: {exc.strerror or exc}") from exc
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    headers["content-length"] = str(len(body))
    return FetchResult(
        status=200, url=path.as_uri(), body=body, headers=headers, etag=file_etag, last_modified=file_modified
    )


def fetch(
    url: str,
    *,
    etag: str | None,
    last_modified: str | None,
    timeout: float,
    max_bytes: int,
    user_agent: str,
    allow_private: bool,
    allow_files: bool,
    client: httpx.Client | None = None,
) -> FetchResult:
    """Fetch one feed document (see the module docstring for the policy).

    ``etag``/``last_modified`` are the validators of the previous response;
    ``timeout`` is the total deadline in seconds; ``max_bytes`` caps the
    decompressed body; ``client`` lets callers share connections (build it
    with ``make_client``). Local files (``file://`` URLs, absolute or relative
    paths) are read when ``allow_files``; they answer 304 when their
    size+mtime ETag (or Last-Modified) matches.

    Raises ``HTTPStatusError``, ``FetchTimeout``, ``TooLargeError``,
    ``ForbiddenAddressError``, ``TooManyRedirects`` or plain ``FetchError``
    (bad URL or scheme, DNS failure, refused connection, protocol error,
    missing file).
    """
    if url_kind(url) == "file":
        if not allow_files:
            raise FetchError(f"refusing to read local file {url.strip()}; set allow_file_urls")
        return _fetch_file(url, etag=etag, last_modified=last_modified, max_bytes=max_bytes)

    guard = _Guard(deadline=time.monotonic() + timeout, timeout=timeout, allow_private=allow_private)
    token = _GUARD.set(guard)
    own_client = client is None
    http = make_client(max_connections=2) if client is None else client
    try:
        return _fetch_http(
            http,
            url,
            etag=etag,
            last_modified=last_modified,
            max_bytes=max_bytes,
            user_agent=user_agent,
            guard=guard,
        )
    except httpx.TimeoutException as exc:
        raise FetchTimeout(f"timed out after {_format_seconds(timeout)}") from exc
    except httpx.ConnectError as exc:
        raise FetchError(_connect_message(exc, url)) from exc
    except httpx.RemoteProtocolError as exc:
        raise FetchError(f"protocol error: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise FetchError(f"invalid URL {url.strip()}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _GUARD.reset(token)
        if own_client:
            http.close()
