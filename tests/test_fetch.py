"""Tests of aggregator.fetch against a real HTTP server on 127.0.0.1 and real files."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aggregator.fetch import (
    ACCEPT,
    MAX_REDIRECTS,
    FetchError,
    FetchTimeout,
    ForbiddenAddressError,
    HTTPStatusError,
    TooLargeError,
    TooManyRedirects,
    fetch,
    file_path,
    format_size,
    is_public_address,
    make_client,
    redirect_target,
    request_headers,
    url_kind,
)
from aggregator.models import FetchResult
from tests.feedserver import FeedServer, RecordedRequest, Response

UA = "aggregator-tests/1.0"
FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
MiB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running
    assert not running.errors


def get(url: str, **overrides: object) -> FetchResult:
    options: dict[str, object] = dict(
        etag=None,
        last_modified=None,
        timeout=5.0,
        max_bytes=10 * MiB,
        user_agent=UA,
        allow_private=True,
        allow_files=True,
    )
    options.update(overrides)
    return fetch(url, **options)  # type: ignore[arg-type]


def gzip_zeros(total: int, segment: int = MiB) -> Callable[[], Iterator[bytes]]:
    """A gzip stream of ``total`` zero bytes, produced lazily and cheaply.

    After a full flush deflate forgets its window, so every further segment of
    zeros compresses to the very same bytes: compress two, repeat the second.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(segment)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = total // segment

    def chunks() -> Iterator[bytes]:
        yield first
        crc = zlib.crc32(zeros)
        for _ in range(count - 1):
            yield repeat
            crc = zlib.crc32(zeros, crc)
        tail = compressor.copy().flush(zlib.Z_FINISH)  # final empty block + a trailer to rewrite
        yield tail[:-8] + crc.to_bytes(4, "little") + (count * segment % 2**32).to_bytes(4, "little")

    return chunks


# --------------------------------------------------------------------------- pure parts


def test_is_public_address() -> None:
    for public in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808"):
        assert is_public_address(public), public
    for private in (
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:0a00:0001::1",
        "64:ff9b::a00:1",
        "not an ip",
        "",
    ):
        assert not is_public_address(private), private


def test_url_kind_and_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert url_kind("https://example.com/feed") == "http"
    assert url_kind(" HTTP://example.com/ ") == "http"
    assert url_kind("file:///tmp/x.xml") == "file"
    assert url_kind("/tmp/x.xml") == "file"
    assert url_kind("feeds/x.xml") == "file"
    for bad in ("ftp://example.com/x", "javascript:alert(1)", "data:text/xml,<rss/>", ""):
        with pytest.raises(FetchError):
            url_kind(bad)
    monkeypatch.chdir(tmp_path)
    assert file_path("a/../b.xml") == tmp_path / "b.xml"
    assert file_path("file:///tmp/a%20b.xml") == Path("/tmp/a b.xml")
    assert file_path("file://localhost/tmp/x") == Path("/tmp/x")
    with pytest.raises(FetchError, match="remote host"):
        file_path("file://server/share/x.xml")


def test_small_pure_helpers() -> None:
    assert redirect_target("http://a.example/x/y", "../z#frag") == "http://a.example/z"
    assert redirect_target("http://a.example/x", "https://b.example/") == "https://b.example/"
    assert format_size(10 * MiB) == "10 MiB"
    assert format_size(1536) == "1536 bytes"
    assert format_size(64 * 1024) == "64 KiB"
    headers = request_headers(user_agent=UA, etag='"e"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    assert headers["If-None-Match"] == '"e"' and headers["User-Agent"] == UA
    assert "If-None-Match" not in request_headers(user_agent=UA)


# --------------------------------------------------------------------------- HTTP


def test_ok_sends_headers_and_returns_lowercased_headers(server: FeedServer) -> None:
    server.route(
        "/feed.xml", Response(body=FEED, headers={"Content-Type": "application/rss+xml", "X-Custom": "yes"})
    )
    result = get(server.url("/feed.xml"))
    assert result.status == 200 and result.body == FEED
    assert result.url == server.url("/feed.xml")
    assert result.headers["content-type"] == "application/rss+xml"
    assert result.headers["x-custom"] == "yes"
    assert result.etag is None and result.permanent_redirect is None and not result.not_modified
    (request,) = server.requests_to("/feed.xml")
    assert request.headers["user-agent"] == UA
    assert request.headers["accept"] == ACCEPT
    assert request.headers["accept-encoding"] == "gzip, deflate"
    assert "if-none-match" not in request.headers and "if-modified-since" not in request.headers


def test_conditional_get_round_trip(server: FeedServer) -> None:
    modified = "Wed, 21 Oct 2015 07:28:00 GMT"
    server.route("/feed.xml", Response(body=FEED, etag='"v1"', last_modified=modified))
    first = get(server.url("/feed.xml"))
    assert first.status == 200 and first.etag == '"v1"' and first.last_modified == modified
    second = get(server.url("/feed.xml"), etag=first.etag, last_modified=first.last_modified)
    assert second.status == 304 and second.not_modified and second.body is None
    assert second.etag == '"v1"' and second.last_modified == modified
    sent = server.requests_to("/feed.xml")[1].headers
    assert sent["if-none-match"] == '"v1"' and sent["if-modified-since"] == modified
    # the feed changed: a new ETag, a full response
    server.route("/feed.xml", Response(body=FEED + b" ", etag='"v2"'))
    third = get(server.url("/feed.xml"), etag=first.etag, last_modified=None)
    assert third.status == 200 and third.etag == '"v2"'


def test_304_without_validators_keeps_the_ones_sent(server: FeedServer) -> None:
    server.route("/feed.xml", Response(status=304))
    result = get(server.url("/feed.xml"), etag='"old"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    assert result.status == 304 and result.body is None
    assert result.etag == '"old"' and result.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, "HTTP 404 Not Found"), (500, "HTTP 500 Internal Server Error"), (410, "HTTP 410 Gone")],
)
def test_http_errors(server: FeedServer, status: int, message: str) -> None:
    server.route("/feed.xml", Response(status=status, body=b"nope"))
    with pytest.raises(HTTPStatusError) as caught:
        get(server.url("/feed.xml"))
    assert caught.value.status == status
    assert caught.value.message == message


def test_http_error_exposes_retry_after(server: FeedServer) -> None:
    server.route("/feed.xml", Response(status=503, headers={"Retry-After": "120"}))
    with pytest.raises(HTTPStatusError) as caught:
        get(server.url("/feed.xml"))
    assert caught.value.retry_after == "120"


def test_429_exposes_its_headers_for_the_back_off(server: FeedServer) -> None:
    when = "Fri, 20 Nov 2026 14:00:00 GMT"
    server.route("/feed.xml", Response(status=429, headers={"Retry-After": when, "X-RateLimit-Limit": "10"}))
    with pytest.raises(HTTPStatusError) as caught:
        get(server.url("/feed.xml"))
    assert (caught.value.status, caught.value.message) == (429, "HTTP 429 Too Many Requests")
    assert caught.value.retry_after == when and caught.value.headers["x-ratelimit-limit"] == "10"


def test_accept_asks_for_every_feed_format(server: FeedServer) -> None:
    server.route("/feed.json", Response(body=b"{}"))
    get(server.url("/feed.json"))
    accept = server.requests_to("/feed.json")[0].headers["accept"]
    for kind in ("application/atom+xml", "application/rss+xml", "application/feed+json", "application/json"):
        assert kind in accept


def test_slow_server_times_out(server: FeedServer) -> None:
    server.route("/slow", Response(body=FEED, delay=5))
    started = time.monotonic()
    with pytest.raises(FetchTimeout) as caught:
        get(server.url("/slow"), timeout=0.3)
    assert caught.value.message == "timed out after 0.3 s"
    assert time.monotonic() - started < 2


def test_trickled_body_is_cut_by_the_total_deadline(server: FeedServer) -> None:
    # one byte every 50 ms: no single read ever waits long, the whole takes 20 s
    server.route("/trickle", Response(body=b"x" * 400, trickle=0.05))
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        get(server.url("/trickle"), timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_trickled_headers_are_cut_by_the_total_deadline(server: FeedServer) -> None:
    server.route("/trickle", Response(body=FEED, header_trickle=0.05))
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        get(server.url("/trickle"), timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_deadline_also_applies_with_a_caller_client(server: FeedServer) -> None:
    server.route("/trickle", Response(body=b"x" * 400, trickle=0.05))
    started = time.monotonic()
    with httpx.Client() as client, pytest.raises(FetchTimeout):
        get(server.url("/trickle"), timeout=0.5, client=client)
    assert time.monotonic() - started < 1.5


def test_oversized_body_with_content_length(server: FeedServer) -> None:
    server.route("/big", Response(body=b"x" * 5000))
    with pytest.raises(TooLargeError) as caught:
        get(server.url("/big"), max_bytes=4096)
    assert caught.value.message == "response larger than 4 KiB limit"


def test_oversized_chunked_body_is_aborted(server: FeedServer) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"y" * 65536

    server.route("/endless", Response(body=endless))
    with pytest.raises(TooLargeError):
        get(server.url("/endless"), max_bytes=MiB)


def test_gzip_bomb_is_aborted_early_with_bounded_memory(server: FeedServer) -> None:
    server.route("/bomb", Response(body=gzip_zeros(1 << 30), headers={"Content-Encoding": "gzip"}))
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match="1 MiB"):
            get(server.url("/bomb"), max_bytes=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * MiB
    assert time.monotonic() - started < 3


def test_gzip_and_deflate_bodies_are_decoded(server: FeedServer) -> None:
    server.route("/gz", Response(body=gzip.compress(FEED), headers={"Content-Encoding": "gzip"}))
    server.route("/zlib", Response(body=zlib.compress(FEED), headers={"Content-Encoding": "deflate"}))
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    server.route(
        "/raw", Response(body=raw.compress(FEED) + raw.flush(), headers={"Content-Encoding": "deflate"})
    )
    server.route("/zeros", Response(body=gzip_zeros(3 * MiB), headers={"Content-Encoding": "gzip"}))
    for path in ("/gz", "/zlib", "/raw"):
        assert get(server.url(path)).body == FEED, path
    assert get(server.url("/zeros"), max_bytes=3 * MiB).body == bytes(3 * MiB)
    server.route("/br", Response(body=b"??", headers={"Content-Encoding": "br"}))
    with pytest.raises(FetchError, match="unsupported content encoding"):
        get(server.url("/br"))
    server.route("/broken", Response(body=b"not gzip at all", headers={"Content-Encoding": "gzip"}))
    with pytest.raises(FetchError, match="invalid compressed response"):
        get(server.url("/broken"))


def test_redirects_are_followed_and_permanent_ones_recorded(server: FeedServer) -> None:
    server.route("/feed.xml", Response(body=FEED))
    server.redirect("/moved", "/feed.xml", status=301)
    result = get(server.url("/moved"))
    assert result.status == 200 and result.url == server.url("/feed.xml")
    assert result.permanent_redirect == server.url("/feed.xml")

    server.redirect("/temp", "/feed.xml", status=302)
    assert get(server.url("/temp")).permanent_redirect is None

    # permanent then temporary: the feed moved to the first target
    server.redirect("/p308", "/temp", status=308)
    result = get(server.url("/p308"))
    assert result.url == server.url("/feed.xml") and result.permanent_redirect == server.url("/temp")

    # temporary first: nothing is permanent
    server.redirect("/t307", "/moved", status=307)
    assert get(server.url("/t307")).permanent_redirect is None


def test_redirect_keeps_conditional_headers(server: FeedServer) -> None:
    server.route("/feed.xml", Response(body=FEED, etag='"v1"'))
    server.redirect("/old", "/feed.xml", status=301)
    result = get(server.url("/old"), etag='"v1"')
    assert result.status == 304 and result.permanent_redirect == server.url("/feed.xml")


def test_redirect_loop(server: FeedServer) -> None:
    server.redirect("/a", "/b")
    server.redirect("/b", "/a")
    with pytest.raises(TooManyRedirects, match="redirect loop"):
        get(server.url("/a"))


def test_too_many_redirects(server: FeedServer) -> None:
    for hop in range(MAX_REDIRECTS + 1):
        server.redirect(f"/r{hop}", f"/r{hop + 1}")
    server.route(f"/r{MAX_REDIRECTS + 1}", Response(body=FEED))
    with pytest.raises(TooManyRedirects, match="too many redirects"):
        get(server.url("/r0"))
    # exactly MAX_REDIRECTS hops is fine
    assert get(server.url("/r1")).body == FEED


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://example.com/feed.xml", "javascript:alert(1)"]
)
def test_redirect_to_other_schemes_is_refused(server: FeedServer, target: str) -> None:
    server.redirect("/evil", target)
    with pytest.raises(FetchError, match="refusing to follow redirect") as caught:
        get(server.url("/evil"))
    assert type(caught.value) is FetchError


def test_redirect_without_location(server: FeedServer) -> None:
    server.route("/r", Response(status=302))
    with pytest.raises(HTTPStatusError, match="without a Location"):
        get(server.url("/r"))


def test_private_addresses_are_refused(server: FeedServer) -> None:
    server.route("/feed.xml", Response(body=FEED))
    with pytest.raises(ForbiddenAddressError) as caught:
        get(server.url("/feed.xml"), allow_private=False)
    assert caught.value.message == "refusing to fetch private address 127.0.0.1; set allow_private"
    with pytest.raises(ForbiddenAddressError, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        get(f"http://localhost:{server.port}/feed.xml", allow_private=False)
    assert server.requests == []  # refused before connecting


def test_guarded_client_checks_addresses_at_connect_time(server: FeedServer) -> None:
    server.route("/feed.xml", Response(body=FEED))
    with make_client() as client:
        # used outside fetch(), the transport applies the safe default policy
        with pytest.raises(ForbiddenAddressError):
            client.get(server.url("/feed.xml"))
        # and a shared client serves several fetches with their own policies
        assert get(server.url("/feed.xml"), client=client).body == FEED
        assert get(f"http://localhost:{server.port}/feed.xml", client=client).body == FEED
        with pytest.raises(ForbiddenAddressError):
            get(server.url("/feed.xml"), client=client, allow_private=False)
    assert len(server.requests) == 2


def test_connection_refused(server: FeedServer) -> None:
    port = server.port
    server.stop()
    with pytest.raises(FetchError, match="cannot connect to 127.0.0.1"):
        get(f"http://127.0.0.1:{port}/feed.xml", timeout=2)


def test_bad_urls() -> None:
    with pytest.raises(FetchError, match="unsupported URL scheme"):
        get("gopher://example.com/")
    with pytest.raises(FetchError):
        get("http:///no-host")


def test_dynamic_route_sees_the_request(server: FeedServer) -> None:
    def answer(request: RecordedRequest) -> Response:
        return Response(body=request.headers["user-agent"].encode())

    server.route("/echo", answer)
    assert get(server.url("/echo?x=1")).body == UA.encode()
    assert server.requests_to("/echo")[0].query == "x=1"


# --------------------------------------------------------------------------- files


def test_file_url_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(FEED)
    for url in (feed.as_uri(), str(feed)):
        result = get(url)
        assert result.status == 200 and result.body == FEED
        assert result.url == feed.as_uri()
    monkeypatch.chdir(tmp_path)
    assert get("feed.xml").url == feed.as_uri()
    assert get("./sub/../feed.xml").body == FEED


def test_file_conditional_get(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(FEED)
    first = get(str(feed))
    assert first.etag and first.last_modified
    again = get(str(feed), etag=first.etag, last_modified=first.last_modified)
    assert again.status == 304 and again.body is None
    feed.write_bytes(FEED + b"\n")
    assert get(str(feed), etag=first.etag).status == 200


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="file not found: .*missing.xml"):
        get(str(tmp_path / "missing.xml"))
    with pytest.raises(FetchError, match="not a regular file"):
        get(str(tmp_path))
    big = tmp_path / "big.xml"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(TooLargeError):
        get(str(big), max_bytes=1000)
    with pytest.raises(FetchError, match="refusing to read local file"):
        get(str(big), allow_files=False)


def test_clients_share_one_tls_context_and_are_cheap_to_make() -> None:
    """Building the CA store costs ~40 ms; it is done once per process, not per client."""
    import time

    from aggregator.fetch import _ssl_context

    first, second = make_client(), make_client()
    try:
        contexts = {id(c._transport._pool._ssl_context) for c in (first, second)}  # type: ignore[attr-defined]
        assert contexts == {id(_ssl_context())}
        assert _ssl_context().verify_mode.name == "CERT_REQUIRED" and _ssl_context().check_hostname
    finally:
        first.close()
        second.close()
    started = time.process_time()
    for _ in range(20):
        make_client().close()
    assert (time.process_time() - started) / 20 < 0.01
