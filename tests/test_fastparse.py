"""The fast path of ``parse_feed`` (lxml for plain RSS 2.0/0.92 items) against feedparser.

The fast path must give exactly what feedparser gives, so every test here
parses the same bytes twice, ``fast=True`` (the default) and ``fast=False``
(feedparser for every document), and compares the ``ParsedFeed`` records
(or the ``ParseError`` messages). Documents outside the fast path's subset
must be refused by it (``_fast_parse`` returns None) and so go to feedparser.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from feedparser.datetimes import _parse_date  # type: ignore[import-untyped]

from aggregator import parse
from aggregator.models import ParsedFeed
from tests.conftest import shared_path

NOW = datetime(2024, 2, 1, tzinfo=UTC)
URL = "https://news.example/feeds/world.xml"


def both(body: bytes, *, url: str = URL, headers: dict[str, str] | None = None) -> tuple[object, object]:
    def run(fast: bool) -> object:
        try:
            return parse.parse_feed(body, url=url, headers=headers, now=NOW, fast=fast)
        except parse.ParseError as exc:
            return ("ParseError", exc.message)

    return run(True), run(False)


def accepted(body: bytes, headers: dict[str, str] | None = None) -> bool:
    prepared = parse.cut_entries(parse.fix_char_references(body), 1000)
    return parse._fast_parse(prepared, headers) is not None


def rss(items: str, *, channel: str = "<title>World</title><link>https://news.example/</link>",
        head: str = '<?xml version="1.0" encoding="utf-8"?>', root: str = '<rss version="2.0"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:media="http://search.yahoo.com/mrss/" xmlns:atom="http://www.w3.org/2005/Atom">',
        tail: str = "") -> bytes:
    return f"{head}{root}<channel>{channel}{items}{tail}</channel></rss>".encode()


def assert_same(body: bytes, *, fast: bool, headers: dict[str, str] | None = None) -> ParsedFeed | object:
    assert accepted(body, headers) is fast
    quick, slow = both(body, headers=headers)
    assert quick == slow
    return quick


# --------------------------------------------------------------------------- corpora


def _corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("LICENSE", "SOURCE"))


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["news-snapshots", "feedparser"])
def test_same_entries_as_feedparser_on_the_corpora(corpus: str) -> None:
    """Every document of ../shared/corpora gives the same ParsedFeed (or error) both ways."""
    files = _corpus_files(shared_path("corpora", corpus))
    assert files
    differing = []
    fast = 0
    for path in files:
        body = path.read_bytes()
        fast += accepted(body)
        quick, slow = both(body, url=f"https://example.com/{path.parent.name}/{path.name}")
        if quick != slow:
            differing.append(path.name)
    assert differing == []
    # The fast path is not vacuous: it reads a good share of the real outlets.
    if corpus == "news-snapshots":
        assert fast >= 30, fast
    else:
        assert fast >= 100, fast


def test_the_benchmark_documents_take_the_fast_path() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import synthetic  # type: ignore[import-not-found]

    for length in ("headline", "full"):
        for _name, body in synthetic.feed_documents(60, length=length, per_feed=30):
            feed = assert_same(body, fast=True)
            assert isinstance(feed, ParsedFeed) and len(feed.entries) == 30


# --------------------------------------------------------------------------- what the fast path reads


def test_plain_items_are_read_as_feedparser_reads_them() -> None:
    items = (
        "<item><title>Plain &amp; simple</title><link>https://news.example/a?x=1&amp;y=2</link>"
        "<guid>https://news.example/a</guid><pubDate>Tue, 30 Jan 2024 10:00:00 +0100</pubDate>"
        "<description>&lt;p&gt;Some &lt;b&gt;bold&lt;/b&gt; text&lt;/p&gt;</description>"
        "<dc:creator>Ann Author</dc:creator><category domain='x'>World</category>"
        "<enclosure url='https://news.example/a.jpg' type='image/jpeg' length='1'/>"
        "<media:content url='https://news.example/a.jpg'/><media:thumbnail url='https://news.example/t.jpg'/>"
        "<atom:link rel='standout' href='https://news.example/other'/><comments>https://news.example/c</comments>"
        "</item>"
        "<item><title>A &lt;b&gt;tagged&lt;/b&gt; title</title>"
        "<guid isPermaLink='false'>tag:news.example,2024:2</guid>"
        "<content:encoded><![CDATA[<p>Body <a href='/rel'>link</a></p><script>x()</script>]]></content:encoded>"
        "<author>editor@news.example (Ed Itor)</author><pubDate>Tue, 30 Jan 2024 09:00:00 GMT</pubDate></item>"
        "<item><guid>relative/3</guid><description>Only a description, no title</description></item>"
        "<item><title>Content then description</title><link>https://news.example/4</link>"
        "<content:encoded>&lt;p&gt;The body&lt;/p&gt;</content:encoded><description>The summary</description></item>"
        "<item><link>https://news.example/5</link><guid isPermaLink='true'>https://news.example/5-guid</guid>"
        "<title>Link before guid</title><pubDate>30 Jan 2024 08:00:00 -0500</pubDate></item>"
        "<item><guid isPermaLink='true'>https://news.example/6-guid</guid><link>https://news.example/6</link>"
        "<title>Guid before link</title><pubDate>not a date</pubDate></item>"
        "<item><title>  </title><link></link><guid></guid><description></description></item>"
        "<item><title>Empty link wins</title><guid>https://news.example/8</guid><link></link></item>"
    )
    feed = assert_same(rss(items), fast=True)
    assert isinstance(feed, ParsedFeed) and len(feed.entries) == 7


def test_text_repairs_and_dates_match_feedparser() -> None:
    items = (
        # UTF-8 read as latin-1 ("Ã©" is "é" once repaired), cp1252 code points, non-ASCII text
        "<item><title>CafÃ© &#x93;quoted&#x94; – déjà vu</title><link>https://news.example/é?q=ü</link>"
        "<description>Smart &#x92;quotes&#x92; and €</description>"
        "<pubDate>Mon, 29 Feb 2024 23:59:59 +1400</pubDate></item>"
        "<item><title>Dates</title><link>https://news.example/d</link><pubDate>2024-01-30T10:00:00Z</pubDate></item>"
        "<item><title>Bad day</title><link>https://news.example/e</link><pubDate>Wed, 31 Feb 2024 10:00:00 GMT</pubDate></item>"
        "<item><title>Zone names</title><link>https://news.example/f</link><pubDate>Tue, 30 Jan 2024 10:00:00 EST</pubDate></item>"
    )
    assert_same(rss(items), fast=True)


def test_rfc822_dates_are_parsed_as_feedparser_parses_them() -> None:
    rng = random.Random(8)
    start = datetime(1990, 1, 1, tzinfo=UTC)
    for _ in range(3000):
        moment = start + timedelta(seconds=rng.randrange(0, 60 * 365 * 24 * 3600))
        offset = timedelta(minutes=rng.choice([0, 60, -300, 330, 840, -720, 59, -1439 + 720]))
        local = moment.astimezone(__import__("datetime").timezone(offset))
        text = format_datetime(local)
        for variant in (text, text.split(", ", 1)[1], text.replace(" +0000", " GMT"), text.replace(" +0000", " Z")):
            assert parse._fp_date(variant) == _parse_date(variant), variant
            assert tuple(parse._fp_date(variant)[:6]) == tuple(_parse_date(variant)[:6])


# --------------------------------------------------------------------------- what it leaves to feedparser


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(rss("<item><title>x</title><foo>bar</foo></item>"), id="unknown element"),
        pytest.param(rss("<item><title>x</title><title>y</title></item>"), id="repeated field"),
        pytest.param(rss("<item><author>a</author><dc:creator>b</dc:creator></item>"), id="two authors"),
        pytest.param(rss("<item><title type='html'>x</title></item>"), id="attribute on a field"),
        pytest.param(rss("<item id='1'><title>x</title></item>"), id="attribute on the item"),
        pytest.param(rss("<item><title>x<!-- c -->y</title></item>"), id="comment in a field"),
        pytest.param(rss("<item><description><p>raw</p></description></item>"), id="nested markup"),
        pytest.param(rss("<item><media:title>m</media:title><title>x</title></item>"), id="media title"),
        pytest.param(rss("<item><media:description>m</media:description></item>"), id="media description"),
        pytest.param(rss("<item><atom:link rel='alternate' href='https://x.example/'/></item>"), id="atom alternate"),
        pytest.param(rss("<item><atom:link href='https://x.example/'/></item>"), id="atom link without rel"),
        pytest.param(rss("<item><source url='https://x.example/'>X</source></item>"), id="source"),
        pytest.param(rss("<item><title>x</title></item>", tail="<image><url>u</url></image>"), id="after items"),
        pytest.param(rss("<item><title>x</title></item><ttl>5</ttl><item><title>y</title></item>"), id="between items"),
        pytest.param(rss("<item><title>x</title></item>", root='<rss version="2.0" xml:base="https://b.example/">'),
                     id="xml:base"),
        pytest.param(rss("<item><enclosure base='https://b.example/' url='u'/><title>x</title></item>"),
                     id="base attribute"),
        pytest.param(rss("<item><title>x</title></item>", root='<rss version="0.91">'), id="rss 0.91"),
        pytest.param(rss("<item><title>\xe9</title></item>", head='<?xml version="1.0" encoding="iso-8859-1"?>'),
                     id="latin-1 declared"),
        pytest.param(b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "b">]><rss version="2.0"><channel>'
                     b"<item><title>&a;</title></item></channel></rss>", id="doctype"),
        pytest.param(rss("<item><title>x</title><description>&lt;b</description>"), id="ill-formed"),
        pytest.param(rss("<item><title>x <![CDATA[<item>]]></title></item>"), id="item markup in CDATA"),
        pytest.param(b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">'
                     b"<channel><title>t</title></channel><item><title>x</title><link>https://x.example/</link></item>"
                     b"</rdf:RDF>", id="rss 1.0"),
        pytest.param(b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><entry><title>x</title>'
                     b'<link href="https://x.example/"/><id>1</id></entry></feed>', id="atom"),
        pytest.param(b"<html><head><title>Oops</title></head><body>no feed</body></html>", id="html"),
    ],
)
def test_documents_outside_the_subset_go_to_feedparser(body: bytes) -> None:
    assert_same(body, fast=False)


def test_a_charset_header_other_than_utf8_goes_to_feedparser() -> None:
    body = rss("<item><title>Caf\xe9</title><link>https://news.example/a</link></item>")
    assert_same(body, fast=True, headers={"Content-Type": "application/rss+xml; charset=utf-8"})
    assert_same(body, fast=False, headers={"Content-Type": "application/rss+xml; charset=iso-8859-1"})


def test_rss_092_and_no_declaration_are_read() -> None:
    items = "<item><title>x</title><link>https://news.example/x</link><description>d</description></item>"
    assert_same(rss(items, root='<rss version="0.92">', head=""), fast=True)


def test_max_entries_still_applies_on_the_fast_path() -> None:
    items = "".join(f"<item><title>t{i}</title><link>https://news.example/{i}</link></item>" for i in range(30))
    body = rss(items)
    feed = parse.parse_feed(body, url=URL, now=NOW, max_entries=7)
    assert [e.title for e in feed.entries] == [f"t{i}" for i in range(7)]
    assert feed == parse.parse_feed(body, url=URL, now=NOW, max_entries=7, fast=False)
