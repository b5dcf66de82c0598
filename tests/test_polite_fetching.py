"""Polite fetching end to end: each polling rule of aggregator.politeness, seen
through the whole pipeline (fetch -> parse -> store) against a real HTTP server
on 127.0.0.1 and a real SQLite file; the formats and encodings the fetcher and
parser cover, through the pipeline too; and the CLI around them (per-feed
bounds, stopped feeds, OPML round trip)."""

from __future__ import annotations

import email.utils
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from aggregator import politeness
from aggregator.cli import main
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, bounds, run_pass, update_feed
from aggregator.models import Feed
from aggregator.storage import Storage
from aggregator.web import create_app
from tests.conftest import NOW  # Friday 2026-11-20 12:00 UTC
from tests.feedserver import FeedServer, Response

RSS_TYPE = {"Content-Type": "application/rss+xml"}
SY = 'xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"'


def rss(channel_extra: str = "", *, guid: str = "a1") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {SY}><channel><title>Polite Outlet</title>'
        f"<link>https://polite.example/</link><description>x</description>{channel_extra}"
        f"<item><guid>{guid}</guid><title>Harbour wall breached</title><link>https://polite.example/{guid}</link>"
        "<description>Storm Orla breached the harbour wall.</description>"
        "<pubDate>Fri, 20 Nov 2026 10:00:00 GMT</pubDate></item></channel></rss>"
    ).encode()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv
    assert not srv.errors


def fetched(storage: Storage, settings: Settings, url: str, *, now: datetime = NOW, **add: object) -> Feed:
    """Subscribe to ``url``, update it once at ``now``, return the stored feed."""
    feed = storage.get_feed_by_url(url) or storage.add_feed(url, now=now, **add)  # type: ignore[arg-type]
    update_feed(storage, feed, settings, now=now)
    stored = storage.get_feed(feed.id)
    assert stored is not None
    return stored


def again(storage: Storage, settings: Settings, feed: Feed, now: datetime) -> Feed:
    update_feed(storage, feed, settings, now=now)
    stored = storage.get_feed(feed.id)
    assert stored is not None
    return stored


def cli(args: list[str], settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AGGREGATOR_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("AGGREGATOR_LOG_LEVEL", "WARNING")
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue()


# --------------------------------------------------------------------------- HTTP cache hints


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 1800),  # the default interval
        ({"Cache-Control": "public, max-age=7200"}, 7200),
        ({"Cache-Control": "max-age=60"}, 1800),  # a hint never makes us poll more often than the default
        ({"Cache-Control": "max-age=9999999"}, 86400),  # within max_interval
        ({"Expires": "Fri, 20 Nov 2026 15:00:00 GMT", "Date": "Fri, 20 Nov 2026 12:00:00 GMT"}, 10800),
    ],
    ids=["none", "max-age", "short-max-age", "huge-max-age", "expires"],
)
def test_cache_headers_set_the_next_check(
    storage: Storage, settings: Settings, server: FeedServer, headers: dict[str, str], expected: int
) -> None:
    server.route("/feed.xml", Response(body=rss(), headers={**RSS_TYPE, **headers}))
    stored = fetched(storage, settings, server.url("/feed.xml"))
    assert stored.next_check_at == NOW + timedelta(seconds=expected)
    assert stored.error_count == 0


def test_validators_and_cache_hints_across_a_304(storage: Storage, settings: Settings, server: FeedServer) -> None:
    modified = "Thu, 19 Nov 2026 08:00:00 GMT"
    server.route(
        "/feed.xml",
        Response(body=rss("<ttl>120</ttl>"), etag='"v1"', last_modified=modified,
                 headers={**RSS_TYPE, "Cache-Control": "max-age=600"}),
    )
    stored = fetched(storage, settings, server.url("/feed.xml"))
    assert (stored.etag, stored.last_modified) == ('"v1"', modified)
    assert stored.next_check_at == NOW + timedelta(minutes=120)  # <ttl> beats the shorter max-age

    later = NOW + timedelta(hours=3)
    stored = again(storage, settings, stored, later)
    request = server.requests_to("/feed.xml")[1]
    assert request.headers["if-none-match"] == '"v1"' and request.headers["if-modified-since"] == modified
    assert (stored.etag, stored.last_modified, stored.error_count) == ('"v1"', modified, 0)
    assert stored.last_success_at == later
    # The 304 carries no document, but the last document's <ttl> still applies.
    assert stored.next_check_at == later + timedelta(minutes=120)


def test_last_modified_alone_is_sent_back(storage: Storage, settings: Settings, server: FeedServer) -> None:
    modified = "Thu, 19 Nov 2026 08:00:00 GMT"
    server.route("/feed.xml", Response(body=rss(), last_modified=modified))
    stored = fetched(storage, settings, server.url("/feed.xml"))
    stored = again(storage, settings, stored, NOW + timedelta(hours=1))
    assert server.requests_to("/feed.xml")[1].headers["if-modified-since"] == modified
    assert stored.last_modified == modified and stored.last_success_at == NOW + timedelta(hours=1)
    assert storage.counts()["articles"] == 1


# --------------------------------------------------------------------------- document hints


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("<ttl>180</ttl>", NOW + timedelta(hours=3)),
        ("<sy:updatePeriod>hourly</sy:updatePeriod>", NOW + timedelta(hours=1)),
        ("<sy:updatePeriod>daily</sy:updatePeriod><sy:updateFrequency>4</sy:updateFrequency>", NOW + timedelta(hours=6)),
        ("<sy:updatePeriod>weekly</sy:updatePeriod>", NOW + timedelta(days=1)),  # max_interval
        # 12:30 (the default interval) falls in the skipped hours 12 and 13: the next check is at 14:00.
        ("<skipHours><hour>12</hour><hour>13</hour></skipHours>", NOW.replace(hour=14)),
        # Friday is skipped: Saturday 00:00 UTC.
        ("<skipDays><day>Friday</day></skipDays>", datetime(2026, 11, 21, 0, 0, tzinfo=NOW.tzinfo)),
        # Both: a 2 h ttl lands at 14:00, skipped; 15:00 is not.
        ("<ttl>120</ttl><skipHours><hour>14</hour></skipHours>", NOW.replace(hour=15)),
    ],
    ids=["ttl", "sy-hourly", "sy-daily-4", "sy-weekly-capped", "skip-hours", "skip-days", "ttl-and-skip"],
)
def test_document_hints_move_the_next_check(
    storage: Storage, settings: Settings, server: FeedServer, channel: str, expected: datetime
) -> None:
    server.route("/feed.xml", Response(body=rss(channel), headers=RSS_TYPE))
    stored = fetched(storage, settings, server.url("/feed.xml"))
    assert stored.next_check_at == expected
    assert stored.poll_hints is not None


# --------------------------------------------------------------------------- per-feed bounds


def test_per_feed_bounds_override_the_settings(storage: Storage, settings: Settings, server: FeedServer) -> None:
    server.route("/slow.xml", Response(body=rss(), headers=RSS_TYPE))
    server.route("/busy.xml", Response(body=rss("<ttl>600</ttl>"), headers={**RSS_TYPE, "Cache-Control": "max-age=7200"}))
    slow = fetched(storage, settings, server.url("/slow.xml"), min_interval=4 * 3600)
    assert slow.next_check_at == NOW + timedelta(hours=4)  # the feed's minimum beats the default
    busy = fetched(storage, settings, server.url("/busy.xml"), max_interval=900)
    assert busy.next_check_at == NOW + timedelta(seconds=900)  # the feed's maximum beats ttl and max-age
    # A feed minimum above the settings' maximum wins over it.
    long = Feed(9, "u", None, None, None, NOW, None, None, None, None, NOW, 0, None, min_interval=3 * 86400)
    assert bounds(long, settings) == politeness.Bounds(default=1800, minimum=3 * 86400, maximum=3 * 86400)


def test_feeds_add_and_set_intervals_through_the_cli(
    storage: Storage, settings: Settings, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/feed.xml", Response(body=rss(), headers=RSS_TYPE))
    url = server.url("/feed.xml")
    code, out = cli(["feeds", "add", url, "--min-interval", "3600", "--max-interval", "7200", "--folder", "News"],
                    settings, monkeypatch)
    assert code == 0 and "added feed 1" in out
    feed = storage.get_feed(1)
    assert feed is not None and (feed.min_interval, feed.max_interval, feed.folder) == (3600, 7200, "News")
    assert fetched(storage, settings, url).next_check_at == NOW + timedelta(hours=1)

    code, out = cli(["feeds", "list"], settings, monkeypatch)
    assert "interval=3600s..7200s" in out
    code, out = cli(["feeds", "set", "1", "--max-interval", "default", "--min-interval", "600",
                     "--folder", "World", "--title", "My name"], settings, monkeypatch)
    assert code == 0
    feed = storage.get_feed(1)
    assert feed is not None and (feed.min_interval, feed.max_interval, feed.folder, feed.title) == (
        600, None, "World", "My name"
    )
    code, out = cli(["feeds", "list", "--json"], settings, monkeypatch)
    row = json.loads(out)
    assert (row["min_interval"], row["max_interval"], row["stopped"]) == (600, None, None)

    # Refusals: min above max, nonsense, unknown feed, nothing to set.
    assert cli(["feeds", "set", "1", "--min-interval", "9000", "--max-interval", "60"], settings, monkeypatch)[0] == 1
    assert cli(["feeds", "add", url + "?x", "--min-interval", "9", "--max-interval", "5"], settings, monkeypatch)[0] == 1
    with pytest.raises(SystemExit) as usage:
        cli(["feeds", "set", "1", "--min-interval", "soon"], settings, monkeypatch)
    assert usage.value.code == 2
    assert cli(["feeds", "set", "99", "--folder", "x"], settings, monkeypatch)[0] == 1
    assert cli(["feeds", "set", "1"], settings, monkeypatch)[0] == 1

    client = create_app(settings, storage).test_client()
    (listed,) = client.get("/api/feeds").get_json()["items"]
    assert (listed["min_interval"], listed["max_interval"], listed["stopped"]) == (600, None, None)


# --------------------------------------------------------------------------- errors: back-off, Retry-After, 410


def test_errors_back_off_exponentially_with_jitter(storage: Storage, settings: Settings, server: FeedServer) -> None:
    # A Retry-After on a 500 is not a rule of ours (only on 429 and 503).
    server.route("/feed.xml", Response(status=500, body=b"boom", headers={"Retry-After": "99999"}))
    feed = storage.add_feed(server.url("/feed.xml"), now=NOW)
    limits = bounds(feed, settings)
    now = NOW
    for count in range(1, 5):
        feed = again(storage, settings, feed, now)
        assert feed.error_count == count and feed.last_error == "HTTP 500 Internal Server Error"
        assert feed.next_check_at == now + timedelta(seconds=politeness.error_delay(feed.id, count, limits))
        assert feed.next_check_at - now == pytest.approx(timedelta(seconds=300 * 2 ** (count - 1)), rel=0.11)
        now = feed.next_check_at
    server.route("/feed.xml", Response(body=rss(), headers=RSS_TYPE))
    feed = again(storage, settings, feed, now)
    assert (feed.error_count, feed.last_error, feed.next_check_at) == (0, None, now + timedelta(seconds=1800))


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_honoured(
    storage: Storage, settings: Settings, server: FeedServer, status: int
) -> None:
    server.route("/feed.xml", Response(status=status, body=b"slow down", headers={"Retry-After": "3600"}))
    stored = fetched(storage, settings, server.url("/feed.xml"))
    assert stored.next_check_at >= NOW + timedelta(seconds=3600)
    assert stored.next_check_at == NOW + timedelta(seconds=3600)  # the back-off (~300 s) is shorter
    assert stored.error_count == 1
    assert stored.last_error is not None and stored.last_error.startswith(f"HTTP {status}")
    assert "the server asked to wait 3600 s (1 h)" in stored.last_error
    assert storage.due_feeds(NOW + timedelta(seconds=3599), 10) == []


def test_retry_after_as_a_date_and_without_one(storage: Storage, settings: Settings, server: FeedServer) -> None:
    when = email.utils.format_datetime(NOW + timedelta(hours=2), usegmt=True)
    server.route("/date.xml", Response(status=503, body=b"", headers={"Retry-After": when}))
    assert fetched(storage, settings, server.url("/date.xml")).next_check_at == NOW + timedelta(hours=2)
    server.route("/none.xml", Response(status=429, body=b""))
    stored = fetched(storage, settings, server.url("/none.xml"))
    assert stored.next_check_at == NOW + timedelta(seconds=politeness.error_delay(stored.id, 1, bounds(stored, settings)))
    # A server asking for a month gets a week at most.
    server.route("/month.xml", Response(status=503, body=b"", headers={"Retry-After": str(30 * 86400)}))
    assert fetched(storage, settings, server.url("/month.xml")).next_check_at == NOW + timedelta(days=7)


def test_410_gone_stops_polling_until_resumed(
    storage: Storage, settings: Settings, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/gone.xml", Response(status=410, body=b"gone"))
    server.route("/ok.xml", Response(body=rss(), headers=RSS_TYPE))
    ok = storage.add_feed(server.url("/ok.xml"), now=NOW)
    stored = fetched(storage, settings, server.url("/gone.xml"))
    assert stored.stopped == "410 Gone: the publisher removed this feed; polling stopped"
    assert stored.last_error == "HTTP 410 Gone; polling stopped" and stored.error_count == 1
    far = NOW + timedelta(days=365)
    assert [f.id for f in storage.due_feeds(far, 10)] == [ok.id]

    # Neither a pass over the due feeds nor one over "all" feeds asks for it again.
    engine = ClusterEngine(ClusterSettings.from_settings(settings))
    run_pass(storage, engine, settings)
    report = run_pass(storage, engine, settings, all_feeds=True)
    assert [r.feed_id for r in report.feeds] == [ok.id]
    assert len(server.requests_to("/gone.xml")) == 1

    code, out = cli(["feeds", "list"], settings, monkeypatch)
    assert "STOPPED: 410 Gone: the publisher removed this feed; polling stopped" in out
    assert f"feeds set {stored.id} --resume" in out
    code, out = cli(["status"], settings, monkeypatch)
    assert code == 0
    row = [json.loads(line) for line in cli(["feeds", "list", "--json"], settings, monkeypatch)[1].splitlines()]
    assert row[1]["stopped"].startswith("410 Gone")

    code, out = cli(["feeds", "set", str(stored.id), "--resume"], settings, monkeypatch)
    assert code == 0 and "polling resumed" in out
    resumed = storage.get_feed(stored.id)
    assert resumed is not None and resumed.stopped is None and resumed.error_count == 0
    assert stored.id in [f.id for f in storage.due_feeds(far, 10)]
    # The publisher brought it back: polled again like any feed.
    server.route("/gone.xml", Response(body=rss(guid="back"), headers=RSS_TYPE))
    back = again(storage, settings, resumed, NOW + timedelta(days=1))
    assert (back.stopped, back.error_count, back.article_count) == (None, 0, 1)


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirect_moves_the_feed(
    storage: Storage, settings: Settings, server: FeedServer, status: int
) -> None:
    server.redirect("/old.xml", "/new.xml", status=status)
    server.route("/new.xml", Response(body=rss(), etag='"n1"', headers=RSS_TYPE))
    stored = fetched(storage, settings, server.url("/old.xml"))
    assert stored.url == server.url("/new.xml") and stored.etag == '"n1"'
    stored = again(storage, settings, stored, NOW + timedelta(hours=1))
    assert len(server.requests_to("/old.xml")) == 1  # the next fetch goes straight to the new URL
    assert [r.headers.get("if-none-match") for r in server.requests_to("/new.xml")] == [None, '"n1"']
    assert stored.error_count == 0


def test_temporary_redirect_keeps_the_url(storage: Storage, settings: Settings, server: FeedServer) -> None:
    server.redirect("/old.xml", "/new.xml", status=302)
    server.route("/new.xml", Response(body=rss(), headers=RSS_TYPE))
    assert fetched(storage, settings, server.url("/old.xml")).url == server.url("/old.xml")


# --------------------------------------------------------------------------- formats, codings, encodings


RSS091 = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<rss version="0.91"><channel><title>Caf\xe9 Gazette</title>'
    "<link>https://cafe.example/</link><description>d</description><language>fr</language>"
    "<item><title>R\xe9sum\xe9 du jour</title><link>https://cafe.example/1</link>"
    "<description>Un caf\xe9 cr\xe8me.</description></item></channel></rss>"
).encode("latin-1")

ATOM03 = b"""<?xml version="1.0" encoding="utf-8"?>
<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>Atom Zero Three</title>
<link rel="alternate" type="text/html" href="https://a03.example.org/"/>
<entry><title>An Atom 0.3 entry</title><link rel="alternate" type="text/html" href="https://a03.example.org/e/1"/>
<id>tag:a03.example.org,2026:1</id><issued>2026-11-19T09:00:00Z</issued><modified>2026-11-19T09:00:00Z</modified>
<content type="text/plain" mode="escaped">Atom 0.3 body.</content></entry></feed>"""

JSON_FEED = json.dumps({
    "version": "https://jsonfeed.org/version/1.1",
    "title": "JSON Outlet",
    "home_page_url": "https://json.example/",
    "items": [{"id": "j1", "url": "https://json.example/1", "title": "A JSON item", "content_text": "Body.",
               "date_published": "2026-11-19T09:00:00Z"}],
}).encode()


@pytest.mark.parametrize(
    ("body", "headers", "source", "title"),
    [
        (RSS091, {"Content-Type": "application/rss+xml"}, "Caf\xe9 Gazette", "R\xe9sum\xe9 du jour"),
        (ATOM03, {"Content-Type": "application/atom+xml"}, "Atom Zero Three", "An Atom 0.3 entry"),
        (JSON_FEED, {"Content-Type": "application/feed+json"}, "JSON Outlet", "A JSON item"),
        (gzip.compress(JSON_FEED), {"Content-Type": "application/feed+json", "Content-Encoding": "gzip"},
         "JSON Outlet", "A JSON item"),
        (zlib.compress(ATOM03), {"Content-Encoding": "deflate"}, "Atom Zero Three", "An Atom 0.3 entry"),
        # A charset only in the HTTP header (no XML declaration): windows-1252 curly quotes.
        (b'<rss version="2.0"><channel><title>\x93Quoted\x94</title><item><guid>q</guid><title>\x93Hi\x94</title>'
         b"</item></channel></rss>", {"Content-Type": "text/xml; charset=windows-1252"}, "\u201cQuoted\u201d",
         "\u201cHi\u201d"),
        ('<?xml version="1.0" encoding="shift_jis"?><rss version="2.0"><channel><title>日本の新聞</title>'
         "<item><guid>j</guid><title>地震のニュース</title></item></channel></rss>".encode("shift_jis"),
         {}, "日本の新聞", "地震のニュース"),
    ],
    ids=["rss091-latin1", "atom03", "jsonfeed", "jsonfeed-gzip", "atom03-deflate", "http-charset", "shift-jis"],
)
def test_formats_and_codings_through_the_pipeline(
    storage: Storage, settings: Settings, server: FeedServer, body: bytes, headers: dict[str, str], source: str,
    title: str,
) -> None:
    server.route("/feed", Response(body=body, headers=headers))
    stored = fetched(storage, settings, server.url("/feed"))
    assert (stored.error_count, stored.last_error, stored.title) == (0, None, source)
    (article,) = storage.pending_articles(10)
    assert (article.title, article.source) == (title, source)


# --------------------------------------------------------------------------- OPML through the CLI


def test_opml_import_export_import_keeps_feeds_and_folders(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>mine</title></head><body>'
        '<outline text="News"><outline text="World">'
        '<outline type="rss" text="Wire" xmlUrl="https://wire.example/rss"/>'
        '<outline type="rss" text="Desk" xmlUrl="https://desk.example/atom"/></outline>'
        '<outline type="rss" text="Local paper" xmlUrl="https://local.example/feed"/></outline>'
        '<outline type="rss" text="Loose" xmlUrl="https://loose.example/feed.json"/>'
        "</body></opml>",
        encoding="utf-8",
    )
    first = settings
    second = settings.replace(database_url=f"sqlite:///{tmp_path / 'fresh.db'}")

    def feeds(which: Settings) -> list[tuple[str, str | None, str | None]]:
        code, out = cli(["feeds", "list", "--json"], which, monkeypatch)
        assert code == 0
        return sorted((r["url"], r["folder"], r["title"]) for r in map(json.loads, out.splitlines()))

    assert cli(["feeds", "import", str(opml)], first, monkeypatch)[0] == 0
    code, exported = cli(["feeds", "export"], first, monkeypatch)
    assert code == 0
    (tmp_path / "exported.opml").write_text(exported, encoding="utf-8")
    code, out = cli(["feeds", "import", str(tmp_path / "exported.opml")], second, monkeypatch)
    assert code == 0 and "imported 4 feeds" in out
    assert feeds(second) == feeds(first) == [
        ("https://desk.example/atom", "News / World", "Desk"),
        ("https://local.example/feed", "News", "Local paper"),
        ("https://loose.example/feed.json", None, "Loose"),
        ("https://wire.example/rss", "News / World", "Wire"),
    ]
    assert cli(["feeds", "export"], second, monkeypatch)[1].split("<body>")[1] == exported.split("<body>")[1]
