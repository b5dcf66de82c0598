"""Feed discovery (aggregator.discover): the pure parts on documents, the I/O
against a real HTTP server on 127.0.0.1, and ``aggregator feeds add`` given a
site's home page."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from aggregator.cli import main
from aggregator.config import Settings
from aggregator.discover import (
    COMMON_PATHS,
    Candidate,
    Discovery,
    common_feed_urls,
    discover,
    find_feed_links,
    looks_like_feed_url,
    looks_like_html,
    no_feed_message,
)
from aggregator.fetch import FetchError
from tests.conftest import NOW
from tests.feedserver import FeedServer, Response

HTML = {"Content-Type": "text/html; charset=utf-8"}
RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>Site News</title><link>https://site.example/</link>'
    b"<item><guid>1</guid><title>Hello</title></item></channel></rss>"
)
ATOM = (
    b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Site Comments</title>'
    b"<id>tag:site.example,2026:c</id><updated>2026-11-20T00:00:00Z</updated>"
    b"<entry><id>tag:site.example,2026:c1</id><title>A comment</title><updated>2026-11-20T00:00:00Z</updated>"
    b"</entry></feed>"
)
JSON_FEED = json.dumps(
    {"version": "https://jsonfeed.org/version/1.1", "title": "Site JSON", "items": [{"id": "1", "title": "x"}]}
).encode()


def page(head: str, title: str = "A Site") -> bytes:
    return f"<!doctype html><html><head><title>{title}</title>{head}</head><body><p>Hi</p></body></html>".encode()


# --------------------------------------------------------------------------- pure parts


def test_find_feed_links_resolves_filters_and_dedupes() -> None:
    body = page(
        '<link rel="alternate" type="application/rss+xml" title="News" href="/feed.xml">'
        '<link rel="Alternate nofollow" type="application/atom+xml; charset=utf-8" href="comments/atom">'
        '<link rel="alternate" type="application/feed+json" href="https://cdn.example/f.json#top">'
        '<link rel="alternate" type="application/rss+xml" href="/feed.xml">'  # a repeat
        '<link rel="alternate" type="text/html" hreflang="fr" href="/fr/">'  # a translation, not a feed
        '<link rel="stylesheet" type="application/rss+xml" href="/nope">'  # not an alternate
        '<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">'
        '<link rel="alternate" type="application/rss+xml" href="">'
        '<link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/2">'
    )
    found = find_feed_links(body, "https://site.example/blog/index.html")
    assert found == [
        Candidate("https://site.example/feed.xml", "News", "application/rss+xml", "link"),
        Candidate("https://site.example/blog/comments/atom", None, "application/atom+xml", "link"),
        Candidate("https://cdn.example/f.json", None, "application/feed+json", "link"),
        Candidate("https://site.example/wp-json/wp/v2/pages/2", None, "application/json", "link"),
    ]


def test_base_href_and_odd_documents() -> None:
    body = page('<base href="https://other.example/sub/"><link rel="alternate" type="application/rss+xml" href="rss">')
    assert [c.url for c in find_feed_links(body, "https://site.example/")] == ["https://other.example/sub/rss"]
    assert find_feed_links(b"", "https://site.example/") == []
    assert find_feed_links(b"\x00\xff garbage <<<", "https://site.example/") == []
    latin = '<html><head><link rel="alternate" type="application/rss+xml" title="Caf\xe9" href="/f"></head></html>'
    (found,) = find_feed_links(latin.encode("latin-1"), "https://site.example/", {"Content-Type": "text/html; charset=latin-1"})
    assert found.title == "Caf\xe9"


def test_common_paths_and_html_sniffing() -> None:
    urls = common_feed_urls("https://site.example:8443/blog/post?id=1#x")
    assert urls[0] == "https://site.example:8443/feed" and len(urls) == len(COMMON_PATHS)
    assert "https://site.example:8443/feed.json" in urls
    assert looks_like_html(b"", {"content-type": "text/html"})
    assert looks_like_html(b"  <!DOCTYPE html><p>x")
    assert not looks_like_html(RSS, {"Content-Type": "application/rss+xml"})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://site.example/news.xml", True),
        ("https://site.example/feed/", True),
        ("https://site.example/blog/RSS", True),
        ("https://site.example/feed.json?x=1", True),
        ("https://site.example/atom.rdf", True),
        ("https://site.example/", False),
        ("https://site.example/?feed=rss2", False),  # a query names nothing: fetched and checked
        ("https://site.example/rss-feeds.html", False),
        ("https://site.example/blog", False),
        ("http://[::1", False),
    ],
)
def test_looks_like_feed_url(url: str, expected: bool) -> None:
    assert looks_like_feed_url(url) is expected


def test_no_feed_message() -> None:
    message = no_feed_message(
        Discovery("https://site.example/", "page", title="A Site", probed=("https://site.example/feed",))
    )
    assert message == (
        'no feed found at https://site.example/: the page ("A Site") announces no feed '
        '(no <link rel="alternate"> of a feed type) and none of /feed on that site is a feed'
    )
    other = Discovery("https://site.example/x.json", "other", problem="not a feed: JSON list")
    assert no_feed_message(other) == "https://site.example/x.json is not a feed: not a feed: JSON list"


# --------------------------------------------------------------------------- discover() against a real server


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv
    assert not srv.errors


def test_a_feed_is_a_feed(server: FeedServer, settings: Settings) -> None:
    server.route("/feed.xml", Response(body=RSS, headers={"Content-Type": "application/rss+xml"}))
    assert discover(server.url("/feed.xml"), settings, now=NOW) == Discovery(server.url("/feed.xml"), "feed")
    assert len(server.requests) == 1


def test_link_tags_come_first_and_are_not_probed(server: FeedServer, settings: Settings) -> None:
    server.route("/", Response(body=page('<link rel="alternate" type="application/rss+xml" href="/news.rss">'),
                               headers=HTML))
    found = discover(server.url("/"), settings, now=NOW)
    assert found.kind == "page" and found.title == "A Site"
    assert [c.url for c in found.candidates] == [server.url("/news.rss")]
    assert [r.path for r in server.requests] == ["/"]  # no probing when the page announces a feed


def test_common_paths_are_probed_when_the_page_announces_nothing(server: FeedServer, settings: Settings) -> None:
    server.route("/", Response(body=page(""), headers=HTML))
    server.route("/feed", Response(body=page("", title="Catch-all"), headers=HTML))  # an HTML page is no feed
    server.route("/feed.xml", Response(body=RSS, headers={"Content-Type": "application/rss+xml"}))
    server.route("/index.xml", Response(body=RSS, headers={"Content-Type": "application/rss+xml"}))  # the same feed
    server.redirect("/feed.json", "/feed.xml", status=302)  # the same feed again, under its own URL
    found = discover(server.url("/"), settings, now=NOW)
    assert found.candidates == (Candidate(server.url("/feed.xml"), "Site News", "application/rss+xml", "probe"),)
    assert {r.path for r in server.requests} >= {"/", *COMMON_PATHS}


def test_json_links_are_checked(server: FeedServer, settings: Settings) -> None:
    server.route("/", Response(body=page(
        '<link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/2">'
        '<link rel="alternate" type="application/json" href="/feed.json">'
    ), headers=HTML))
    server.route("/wp-json/wp/v2/pages/2", Response(body=b'{"id": 2}', headers={"Content-Type": "application/json"}))
    server.route("/feed.json", Response(body=JSON_FEED, headers={"Content-Type": "application/json"}))
    found = discover(server.url("/"), settings, now=NOW)
    assert found.candidates == (Candidate(server.url("/feed.json"), "Site JSON", "application/json", "link"),)


def test_other_documents_and_fetch_errors(server: FeedServer, settings: Settings) -> None:
    server.route("/data", Response(body=b'{"a": 1}', headers={"Content-Type": "application/json"}))
    found = discover(server.url("/data"), settings, now=NOW)
    assert found.kind == "other" and found.problem is not None and "JSON" in found.problem
    server.route("/missing", Response(status=404, body=b"no"))
    with pytest.raises(FetchError, match="HTTP 404"):
        discover(server.url("/missing"), settings, now=NOW)
    with pytest.raises(FetchError, match="private address"):
        discover(server.url("/"), settings.replace(allow_private=False), now=NOW)


# --------------------------------------------------------------------------- feeds add through the CLI


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(args: list[str], settings: Settings, monkeypatch: pytest.MonkeyPatch, stdin: str | None = None) -> tuple[int, str]:
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AGGREGATOR_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("AGGREGATOR_LOG_LEVEL", "WARNING")
    monkeypatch.setattr("sys.stdin", _Terminal(stdin) if stdin is not None else io.StringIO(""))
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue()


def feed_urls(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    code, out = run(["feeds", "list", "--json"], settings, monkeypatch)
    return [json.loads(line)["url"] for line in out.splitlines()]


def test_cli_adds_the_one_feed_a_page_announces(
    server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/", Response(body=page('<link rel="alternate" type="application/rss+xml" href="/news.rss">'),
                               headers=HTML))
    code, out = run(["feeds", "add", server.url("/"), "--folder", "Sites", "--min-interval", "3600"], settings,
                    monkeypatch)
    assert code == 0, out
    assert f"found feed {server.url('/news.rss')}" in out and "added feed 1" in out
    assert feed_urls(settings, monkeypatch) == [server.url("/news.rss")]
    row = json.loads(run(["feeds", "list", "--json"], settings, monkeypatch)[1])
    assert (row["folder"], row["min_interval"]) == ("Sites", 3600)


def test_cli_probes_common_paths(server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    server.route("/", Response(body=page(""), headers=HTML))
    server.route("/feed.xml", Response(body=RSS, headers={"Content-Type": "application/rss+xml"}))
    code, out = run(["feeds", "add", server.url("/")], settings, monkeypatch)
    assert code == 0, out
    assert feed_urls(settings, monkeypatch) == [server.url("/feed.xml")]


def _several(server: FeedServer) -> None:
    server.route("/", Response(body=page(
        '<link rel="alternate" type="application/rss+xml" title="Posts" href="/posts.rss">'
        '<link rel="alternate" type="application/atom+xml" title="Comments" href="/comments.atom">'
        '<link rel="alternate" type="application/feed+json" title="Posts (JSON)" href="/posts.json">'
    ), headers=HTML))


def test_cli_with_several_feeds_and_no_terminal_lists_them_and_fails(
    server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _several(server)
    code, out = run(["feeds", "add", server.url("/")], settings, monkeypatch)
    assert code == 1
    assert f"1. {server.url('/posts.rss')}  Posts  (application/rss+xml)" in out
    assert f"3. {server.url('/posts.json')}" in out
    assert "run `aggregator feeds add URL` with the one you want, or add --first or --all" in capsys.readouterr().err
    assert feed_urls(settings, monkeypatch) == []


def test_cli_first_and_all(server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _several(server)
    assert run(["feeds", "add", server.url("/"), "--first"], settings, monkeypatch)[0] == 0
    assert feed_urls(settings, monkeypatch) == [server.url("/posts.rss")]
    code, out = run(["feeds", "add", server.url("/"), "--all"], settings, monkeypatch)
    assert code == 0 and "skipped " + server.url("/posts.rss") in out  # already subscribed
    assert feed_urls(settings, monkeypatch) == [server.url(p) for p in ("/posts.rss", "/comments.atom", "/posts.json")]
    assert run(["feeds", "add", server.url("/"), "--first"], settings, monkeypatch)[0] == 1  # nothing new


def test_cli_asks_on_a_terminal(server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    _several(server)
    code, out = run(["feeds", "add", server.url("/")], settings, monkeypatch, stdin="7\nx\n2\n")
    assert code == 0, out
    assert out.count("add which? [1-3, a = all, q = none]") == 3
    assert feed_urls(settings, monkeypatch) == [server.url("/comments.atom")]
    assert run(["feeds", "add", server.url("/")], settings, monkeypatch, stdin="q\n")[0] == 1
    assert run(["feeds", "add", server.url("/")], settings, monkeypatch, stdin="")[0] == 1  # end of input
    assert run(["feeds", "add", server.url("/")], settings, monkeypatch, stdin="a\n")[0] == 0
    assert len(feed_urls(settings, monkeypatch)) == 3


def test_cli_page_without_feeds_is_a_clear_error(
    server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server.route("/", Response(body=page("", title="Just a blog"), headers=HTML))
    code, _ = run(["feeds", "add", server.url("/")], settings, monkeypatch)
    assert code == 1
    error = capsys.readouterr().err
    assert f'no feed found at {server.url("/")}: the page ("Just a blog") announces no feed' in error
    assert "/feed, /feed/, /rss, /rss.xml, /atom.xml, /feed.xml, /index.xml, /feed.json" in error
    assert feed_urls(settings, monkeypatch) == []


def test_cli_feed_urls_and_unreachable_urls_are_added_as_given(
    server: FeedServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/", Response(body=RSS, headers={"Content-Type": "application/rss+xml"}))  # a feed at "/"
    server.route("/down", Response(status=503, body=b""))
    server.route("/data", Response(body=b'{"a": 1}', headers={"Content-Type": "application/json"}))
    assert run(["feeds", "add", server.url("/")], settings, monkeypatch)[0] == 0
    code, out = run(["feeds", "add", server.url("/down")], settings, monkeypatch)
    assert code == 0 and "note: cannot check" in out and "HTTP 503" in out
    code, out = run(["feeds", "add", server.url("/data")], settings, monkeypatch)
    assert code == 0 and "is not a feed: not a feed: JSON without a JSON Feed version" in out
    # Not fetched at all: a path that names a feed, and --no-discover.
    assert run(["feeds", "add", server.url("/news.xml")], settings, monkeypatch)[0] == 0
    assert run(["feeds", "add", server.url("/never-fetched"), "--no-discover"], settings, monkeypatch)[0] == 0
    assert feed_urls(settings, monkeypatch) == [
        server.url(p) for p in ("/", "/down", "/data", "/news.xml", "/never-fetched")
    ]
    assert [r.path for r in server.requests] == ["/", "/down", "/data"]
