"""Tests of aggregator.parse: real documents in, ParsedFeed or ParseError out."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.models import ParsedFeed
from aggregator.parse import ParseError, check_entities, parse_feed

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
URL = "https://news.example.com/feeds/world.xml"
SNAPSHOTS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "news-snapshots"


def parse(body: bytes | str, **options: object) -> ParsedFeed:
    data = body.encode("utf-8") if isinstance(body, str) else body
    kwargs: dict[str, object] = {"url": URL, "now": NOW}
    kwargs.update(options)
    return parse_feed(data, **kwargs)  # type: ignore[arg-type]


def rss(items: str, channel: str = "<title>World</title><link>https://news.example.com/</link>") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        f"<channel>{channel}\n{items}\n</channel></rss>"
    )


# --------------------------------------------------------------------------- formats

RSS2 = rss(
    """
    <item>
      <title>Talks &amp; more talks</title>
      <link>https://news.example.com/a/1?utm_source=rss&amp;utm_medium=feed&amp;id=7#top</link>
      <guid isPermaLink="false">urn:news:1</guid>
      <description>&lt;p&gt;Short &lt;b&gt;summary&lt;/b&gt;.&lt;/p&gt;</description>
      <content:encoded><![CDATA[<p>Full <em>story</em> text.</p><p>Second paragraph.</p>]]></content:encoded>
      <dc:creator>Jane Reporter</dc:creator>
      <pubDate>Tue, 17 Nov 2026 10:30:00 +0200</pubDate>
    </item>
    <item>
      <title>No guid here</title>
      <link>/a/2?fbclid=XYZ</link>
      <description>Plain description</description>
    </item>
    """,
    channel="<title>World &amp; Co</title><link>https://news.example.com/</link><ttl>15</ttl>",
)


def test_rss2() -> None:
    feed = parse(RSS2)
    assert feed.title == "World & Co"
    assert feed.link == "https://news.example.com/"
    assert feed.ttl_minutes == 15
    assert feed.warning is None
    first, second = feed.entries
    assert first.key == "urn:news:1"
    assert first.title == "Talks & more talks"
    assert first.link == "https://news.example.com/a/1?id=7"
    assert first.content_html == "<p>Full <em>story</em> text.</p><p>Second paragraph.</p>"
    assert first.text == "Full story text.\nSecond paragraph."
    assert first.summary == "Short summary."
    assert first.author == "Jane Reporter"
    assert first.published == datetime(2026, 11, 17, 8, 30, tzinfo=UTC)
    assert first.updated == first.published
    expected = hashlib.sha256(b"Talks & more talks\nFull story text.\nSecond paragraph.").hexdigest()
    assert first.content_hash == expected
    # no guid: the canonical link, resolved against the feed URL, is the key
    assert second.key == second.link == "https://news.example.com/a/2"
    assert second.text == second.summary == "Plain description"
    assert second.published == second.updated == NOW  # no dates: fetch time


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://blog.example.org/">
  <title type="html">Example &lt;i&gt;Blog&lt;/i&gt;</title>
  <link rel="alternate" href="https://blog.example.org/"/>
  <link rel="self" href="https://blog.example.org/atom.xml"/>
  <id>tag:blog.example.org,2026:feed</id>
  <updated>2026-11-19T08:00:00Z</updated>
  <entry>
    <id>tag:blog.example.org,2026:post-1</id>
    <title>First post</title>
    <link rel="alternate" href="posts/1"/>
    <updated>2026-11-19T08:00:00-05:00</updated>
    <published>2026-11-18T23:15:00+01:00</published>
    <author><name>Ann Author</name></author>
    <summary>The summary.</summary>
    <content type="html">&lt;p&gt;Body with &lt;a href="../about"&gt;a relative link&lt;/a&gt;.&lt;/p&gt;</content>
  </entry>
  <entry>
    <id>tag:blog.example.org,2026:post-2</id>
    <title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">XHTML <b>title</b></div></title>
    <updated>2026-11-19T09:00:00Z</updated>
    <content type="text">Plain &lt;text&gt; content
with a newline</content>
  </entry>
</feed>"""


def test_atom() -> None:
    feed = parse(ATOM)
    assert feed.title == "Example Blog"
    assert feed.link == "https://blog.example.org/"
    assert feed.ttl_minutes is None
    first, second = feed.entries
    assert first.key == "tag:blog.example.org,2026:post-1"
    assert first.link == "https://blog.example.org/posts/1"
    assert first.published == datetime(2026, 11, 18, 22, 15, tzinfo=UTC)
    assert first.updated == datetime(2026, 11, 19, 13, 0, tzinfo=UTC)
    assert first.author == "Ann Author"
    assert first.summary == "The summary."
    assert 'href="https://blog.example.org/about"' in first.content_html
    assert 'rel="nofollow noopener noreferrer"' in first.content_html
    assert first.text == "Body with a relative link."
    assert second.title == "XHTML title"
    assert second.link is None
    assert second.published == second.updated == datetime(2026, 11, 19, 9, 0, tzinfo=UTC)
    assert second.text == "Plain <text> content\nwith a newline"
    assert "&lt;text&gt;" in second.content_html and "<text>" not in second.content_html


RSS1 = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
         xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://rdf.example.net/">
    <title>RDF Site</title>
    <link>https://rdf.example.net/</link>
    <items><rdf:Seq><rdf:li resource="https://rdf.example.net/n/1"/></rdf:Seq></items>
  </channel>
  <item rdf:about="https://rdf.example.net/n/1">
    <title>RDF item</title>
    <link>https://rdf.example.net/n/1?ref=rss</link>
    <description>An RSS 1.0 item.</description>
    <dc:date>2026-11-19T10:00:00+09:00</dc:date>
  </item>
</rdf:RDF>"""


def test_rss1() -> None:
    feed = parse(RSS1)
    assert feed.title == "RDF Site"
    (entry,) = feed.entries
    assert entry.title == "RDF item"
    assert entry.link == "https://rdf.example.net/n/1"
    assert entry.text == "An RSS 1.0 item."
    assert entry.published == datetime(2026, 11, 19, 1, 0, tzinfo=UTC)


def test_feed_without_entries_is_a_feed() -> None:
    feed = parse(rss(""))
    assert feed.title == "World" and feed.entries == ()


# --------------------------------------------------------------------------- not feeds


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not a feed: empty document"),
        (b"  \n\t ", "not a feed: empty document"),
        (b"\xef\xbb\xbf", "not a feed: empty document"),
        (
            b"<!DOCTYPE html><html><head><title>Oops &amp; sorry</title></head><body><p>x</body></html>",
            'not a feed: the document is HTML ("Oops & sorry")',
        ),
        (b"<html><body>no title</body></html>", "not a feed: the document is HTML (<html>)"),
        (b"<?xml version='1.0'?><config><a>1</a></config>", "not a feed: no RSS, Atom or RDF document found"),
    ],
)
def test_not_feeds(body: bytes, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(body)
    assert caught.value.message == message
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b'{"json": true}',
        b"hello world",
        b"<rss version='2.0'><channel><title>x</title>\n<item><tit",
    ],
)
def test_garbage_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError, match=r"^(XML error: .* at line \d+|not a feed: .*)$"):
        parse(body)


def test_xml_error_names_the_line() -> None:
    body = b'<?xml version="1.0"?>\n<rss version="2.0">\n<channel><title>x</wrong>\n</channel></rss>'
    with pytest.raises(ParseError, match="^XML error: mismatched tag at line 3$"):
        parse(body)


def test_broken_document_with_entries_is_accepted_with_a_warning() -> None:
    body = rss(
        "<item><title>Kept &nbsp; anyway</title><link>https://x.example/1</link></item>"
        "<item><title>Second</title><link>https://x.example/2</link></item>"
    )
    feed = parse(body)
    assert [entry.title for entry in feed.entries] == ["Kept anyway", "Second"]
    assert feed.warning is not None and feed.warning.startswith("XML error: undefined entity")


@pytest.mark.parametrize("name", ["latimes.xml", "straittimes.xml"])
def test_snapshot_html_error_pages(name: str) -> None:
    paths = [path for path in sorted(SNAPSHOTS.glob(f"*/{name}")) if b"<rss" not in path.read_bytes()[:4096]]
    if not paths:
        pytest.skip(f"{SNAPSHOTS} is absent")
    assert len(paths) >= 4  # the outlet answered with an error page in four of five snapshots
    for path in paths:
        with pytest.raises(ParseError, match="^not a feed: the document is HTML"):
            parse(path.read_bytes())


def _snapshot_files() -> list[Path]:
    return sorted(SNAPSHOTS.glob("*/*.xml")) if SNAPSHOTS.is_dir() else []


@pytest.mark.skipif(not SNAPSHOTS.is_dir(), reason="../shared/corpora/news-snapshots is absent")
def test_every_snapshot_parses_or_is_refused_cleanly() -> None:
    files = _snapshot_files()
    assert files
    parsed = 0
    for path in files:
        try:
            feed = parse(path.read_bytes(), url="https://snapshot.example/feed.xml")
        except ParseError as exc:
            assert exc.message, path
            continue
        parsed += 1
        assert feed.entries, path
        keys = [entry.key for entry in feed.entries]
        assert len(keys) == len(set(keys)), path
        for entry in feed.entries:
            assert entry.title and entry.key, path
            assert entry.published.tzinfo is UTC and entry.published <= NOW + timedelta(days=1)
            assert "<script" not in entry.content_html.lower()
            assert len(entry.summary) <= 500
    assert parsed >= len(files) - 10


# --------------------------------------------------------------------------- encodings


def test_declared_latin1_is_honoured() -> None:
    text = rss("<item><title>Café crème</title><link>https://x.example/1</link></item>")
    (entry,) = parse(text.replace('encoding="utf-8"', 'encoding="iso-8859-1"').encode("latin-1")).entries
    assert entry.title == "Café crème"


def test_charset_from_http_headers_is_honoured() -> None:
    text = rss("<item><title>Ça coûte 5 €</title><link>https://x.example/1</link></item>")
    body = text.replace('<?xml version="1.0" encoding="utf-8"?>\n', "").encode("cp1252")
    feed = parse(body, headers={"Content-Type": "application/rss+xml; charset=windows-1252"})
    assert feed.entries[0].title == "Ça coûte 5 €"


def test_invalid_utf8_bytes_do_not_lose_the_feed() -> None:
    body = rss("<item><title>Bad \xff\xfe bytes</title><link>https://x.example/1</link></item>")
    data = body.encode("utf-8").replace("\xff\xfe".encode(), b"\xff\xfe")
    feed = parse(data)
    assert len(feed.entries) == 1
    assert feed.entries[0].title.startswith("Bad")


def test_utf16_document() -> None:
    body = rss("<item><title>Wide</title><link>https://x.example/1</link></item>")
    body = body.replace('encoding="utf-8"', 'encoding="utf-16"')
    (entry,) = parse(body.encode("utf-16")).entries
    assert entry.title == "Wide"


# --------------------------------------------------------------------------- XML attacks

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol "lol">\n'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10)
    )
    + ']>\n<rss version="2.0"><channel><title>t</title><item><title>&lol9;</title></item></channel></rss>'
)


@pytest.mark.parametrize("layout", ["lines", "one line", "utf-16"])
def test_billion_laughs_is_refused_quickly(layout: str) -> None:
    text = BILLION_LAUGHS if layout != "one line" else BILLION_LAUGHS.replace("\n", "")
    body = text.encode("utf-16") if layout == "utf-16" else text.encode()
    started = time.monotonic()
    with pytest.raises(ParseError, match="entity-expansion attack"):
        parse(body)
    assert time.monotonic() - started < 0.5


def test_quadratic_blowup_is_refused() -> None:
    value = "x" * 1000
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "{value}">]>'
        f'<rss version="2.0"><channel><title>t</title><item><title>{"&a;" * 5000}</title>'
        "</item></channel></rss>"
    )
    with pytest.raises(ParseError, match="beyond its own size"):
        parse(body)


def test_parameter_entity_tricks_are_refused() -> None:
    body = (
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % a "<!ENTITY b \'x\'>"> %a;]>'
        '<rss version="2.0"><channel><title>t</title></channel></rss>'
    )
    with pytest.raises(ParseError, match="entity"):
        parse(body)


def test_external_entities_are_never_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    body = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{secret.as_uri()}">\n]>\n'
        '<rss version="2.0"><channel><title>t</title><item><title>a&xxe;b</title>'
        "<link>https://x.example/1</link></item></channel></rss>"
    )
    feed = parse(body)
    assert all("TOP-SECRET" not in entry.title + entry.text for entry in feed.entries)


def test_harmless_entities_still_work() -> None:
    body = (
        '<!DOCTYPE rss [\n  <!ENTITY id "tag:example.com,">\n  <!ENTITY nbsp "&#160;">\n]>\n'
        '<rss version="2.0"><channel><title>t</title><item><guid isPermaLink="false">&id;2006:/blog/</guid>'
        "<title>a&nbsp;b</title></item></channel></rss>"
    )
    (entry,) = parse(body).entries
    assert entry.key == "tag:example.com,2006:/blog/"
    assert entry.title == "a b"


def test_check_entities_ignores_entity_text_in_content() -> None:
    body = rss(
        '<item><title>XML security</title><description><![CDATA[<!ENTITY lol "&lol1;">]]>'
        "</description></item>"
    ).encode()
    check_entities(body)
    assert parse(body).entries[0].title == "XML security"


# --------------------------------------------------------------------------- normalisation


def test_key_fallback_order() -> None:
    feed = parse(
        rss(
            "<item><guid>https://x.example/guid</guid><link>https://x.example/l1</link><title>A</title></item>"
            "<item><link>https://x.example/l2?utm_campaign=z</link><title>B</title></item>"
            "<item><title>C</title><description>only text</description></item>"
        )
    )
    a, b, c = feed.entries
    assert a.key == "https://x.example/guid"
    assert b.key == "https://x.example/l2"
    expected = "hash:" + hashlib.sha256(b"C\nonly text").hexdigest()
    assert c.key == expected and c.link is None


def test_duplicate_keys_keep_the_first() -> None:
    feed = parse(
        rss(
            "<item><guid>g1</guid><title>First</title></item>"
            "<item><guid>g1</guid><title>Second</title></item>"
            "<item><link>https://x.example/p?utm_source=a</link><title>Third</title></item>"
            "<item><link>https://x.example/p?utm_source=b</link><title>Fourth</title></item>"
        )
    )
    assert [entry.title for entry in feed.entries] == ["First", "Third"]


def test_empty_entries_are_dropped_and_titles_fall_back_to_text() -> None:
    feed = parse(
        rss(
            "<item><description>   </description></item>"
            "<item><description>&lt;p&gt;A body with no title at all, long enough to need cutting "
            + "word " * 60
            + "&lt;/p&gt;</description></item>"
        )
    )
    (entry,) = feed.entries
    assert entry.title.startswith("A body with no title at all") and entry.title.endswith("…")
    assert len(entry.title) <= 120


def test_titles_are_plain_text() -> None:
    feed = parse(
        rss(
            "<item><guid>1</guid><title>&lt;b&gt;Bold&lt;/b&gt; &amp;amp; &lt;script&gt;x()&lt;/script&gt;move</title></item>"
            "<item><guid>2</guid><title>  Spaces\n\n everywhere  </title></item>"
        )
    )
    assert [entry.title for entry in feed.entries] == ["Bold & move", "Spaces everywhere"]


def test_summary_is_capped() -> None:
    (entry,) = parse(
        rss(f"<item><guid>1</guid><title>t</title><description>{'word ' * 400}</description></item>")
    ).entries
    assert len(entry.summary) <= 500 and entry.summary.endswith("…")
    assert len(entry.text) > 1900


def test_relative_links_and_only_http_links() -> None:
    feed = parse(
        rss(
            "<item><title>rel</title><link>../story/9</link></item>"
            "<item><title>js</title><link>javascript:alert(1)</link></item>"
            "<item><title>proto</title><link>//cdn.example.com/x</link></item>"
        )
    )
    links = [entry.link for entry in feed.entries]
    assert links == ["https://news.example.com/story/9", None, "https://cdn.example.com/x"]


def test_dates() -> None:
    feed = parse(
        rss(
            "<item><guid>tz</guid><title>a</title><pubDate>Thu, 19 Nov 2026 23:30:00 -0500</pubDate></item>"
            "<item><guid>soon</guid><title>b</title><pubDate>Fri, 20 Nov 2026 15:00:00 GMT</pubDate></item>"
            "<item><guid>future</guid><title>c</title><pubDate>Sun, 22 Nov 2026 12:00:01 GMT</pubDate></item>"
            "<item><guid>none</guid><title>d</title></item>"
            "<item><guid>bad</guid><title>e</title><pubDate>not a date</pubDate></item>"
        )
    )
    by_key = {entry.key: entry for entry in feed.entries}
    assert by_key["tz"].published == datetime(2026, 11, 20, 4, 30, tzinfo=UTC)
    assert by_key["soon"].published == datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # within a day: kept
    assert by_key["future"].published == NOW  # clamped
    assert by_key["none"].published == by_key["none"].updated == NOW
    assert by_key["bad"].published == NOW
    for entry in feed.entries:
        assert entry.published.tzinfo is UTC and entry.updated.tzinfo is UTC


def test_naive_now_is_taken_as_utc() -> None:
    feed = parse(rss("<item><guid>1</guid><title>a</title></item>"), now=datetime(2026, 1, 1))
    assert feed.entries[0].published == datetime(2026, 1, 1, tzinfo=UTC)


def test_max_entries() -> None:
    items = "".join(f"<item><guid>{i}</guid><title>t{i}</title></item>" for i in range(30))
    feed = parse(rss(items), max_entries=10)
    assert [entry.key for entry in feed.entries] == [str(i) for i in range(10)]


HOSTILE = """<p style="position:fixed" onclick="steal()">Hello <b>world</b></p>
<script>document.cookie</script><style>body{display:none}</style>
<img src="https://img.example.com/a.png" onerror="alert(1)" alt="pic">
<img src="javascript:alert(2)"><a href="javascript:alert(3)">js link</a>
<a href="data:text/html,evil">data link</a><a href="/local">local</a>
<svg onload="alert(4)"><text>svg text</text></svg><math><mi>x</mi></math>
<iframe src="https://evil.example/"></iframe><form action="https://evil.example/"><input name="q"></form>
<object data="x.swf"></object><embed src="x.swf"><base href="https://evil.example/">
<meta http-equiv="refresh" content="0;url=https://evil.example/"><link rel="stylesheet" href="x.css">
<div class="x" id="y">Bye</div><!-- a comment --><noscript>ns</noscript>"""


def test_hostile_html_is_neutralised() -> None:
    body = rss(
        f"<item><guid>1</guid><title>t</title><content:encoded><![CDATA[{HOSTILE}]]></content:encoded></item>"
    )
    (entry,) = parse(body).entries
    html = entry.content_html.lower()
    for bad in (
        "<script",
        "document.cookie",
        "<style",
        "display:none",
        "onerror",
        "onclick",
        "onload",
        "javascript:",
        "data:",
        "<svg",
        "<math",
        "<iframe",
        "<form",
        "<input",
        "<object",
        "<embed",
        "<base",
        "<meta",
        "<link",
        "style=",
        "class=",
        "id=",
        "<!--",
        "svg text",
        "evil",
    ):
        assert bad not in html, bad
    assert 'src="https://img.example.com/a.png"' in html
    assert 'href="https://news.example.com/local"' in html
    assert "<b>world</b>" in html
    for bad in ("document.cookie", "display:none", "svg text", "alert"):
        assert bad not in entry.text
    assert "Hello world" in entry.text and "Bye" in entry.text


# --------------------------------------------------------------------------- robustness


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_give_a_feed_or_a_parse_error(body: bytes) -> None:
    try:
        feed = parse(body)
    except ParseError as exc:
        assert exc.message
    else:
        assert isinstance(feed, ParsedFeed)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_arbitrary_item_text(title: str, description: str) -> None:
    from xml.sax.saxutils import escape

    body = rss(f"<item><title>{escape(title)}</title><description>{escape(description)}</description></item>")
    try:
        feed = parse(body.encode("utf-8", "surrogatepass"))
    except ParseError:
        return
    for entry in feed.entries:
        assert entry.key and entry.title
        assert "<script" not in entry.content_html


# --------------------------------------------------------------------------- every format, one small document each

RSS090 = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://my.netscape.com/rdf/simple/0.9/">
  <channel><title>Old Netscape</title><link>https://old.example.net/</link><description>0.90</description></channel>
  <item><title>First item of 0.90</title><link>https://old.example.net/1</link></item>
</rdf:RDF>"""

RSS091 = """<?xml version="1.0" encoding="ISO-8859-1"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"
  "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel>
  <title>Ninety-One</title><link>https://n91.example.com/</link><description>0.91</description>
  <language>en</language>
  <item><title>A 0.91 item</title><link>https://n91.example.com/a</link><description>Body of 0.91.</description></item>
</channel></rss>"""

RSS092 = """<?xml version="1.0"?>
<rss version="0.92"><channel>
  <title>Ninety-Two</title><link>https://n92.example.com/</link><description>0.92</description>
  <item><title>A 0.92 item</title><description>Body of 0.92.</description>
    <enclosure url="https://n92.example.com/a.mp3" length="1" type="audio/mpeg"/></item>
</channel></rss>"""

ATOM03 = """<?xml version="1.0" encoding="utf-8"?>
<feed version="0.3" xmlns="http://purl.org/atom/ns#">
  <title>Atom Zero Three</title>
  <link rel="alternate" type="text/html" href="https://a03.example.org/"/>
  <modified>2026-11-19T10:00:00Z</modified>
  <entry>
    <title>An Atom 0.3 entry</title>
    <link rel="alternate" type="text/html" href="https://a03.example.org/e/1"/>
    <id>tag:a03.example.org,2026:1</id>
    <issued>2026-11-19T09:00:00Z</issued>
    <modified>2026-11-19T09:30:00Z</modified>
    <author><name>Zed</name></author>
    <content type="text/html" mode="escaped">&lt;p&gt;Atom 0.3 &lt;b&gt;body&lt;/b&gt;.&lt;/p&gt;</content>
  </entry>
</feed>"""


@pytest.mark.parametrize(
    ("document", "title", "entry_title", "text", "link"),
    [
        (RSS090, "Old Netscape", "First item of 0.90", "", "https://old.example.net/1"),
        (RSS091, "Ninety-One", "A 0.91 item", "Body of 0.91.", "https://n91.example.com/a"),
        (RSS092, "Ninety-Two", "A 0.92 item", "Body of 0.92.", None),
        (ATOM03, "Atom Zero Three", "An Atom 0.3 entry", "Atom 0.3 body.", "https://a03.example.org/e/1"),
    ],
    ids=["rss090", "rss091", "rss092", "atom03"],
)
def test_older_formats(document: str, title: str, entry_title: str, text: str, link: str | None) -> None:
    feed = parse(document)
    assert feed.title == title
    (entry,) = feed.entries
    assert (entry.title, entry.text, entry.link) == (entry_title, text, link)


def test_atom03_dates_and_author() -> None:
    (entry,) = parse(ATOM03).entries
    assert entry.key == "tag:a03.example.org,2026:1"
    assert entry.published == datetime(2026, 11, 19, 9, 0, tzinfo=UTC)
    assert entry.updated == datetime(2026, 11, 19, 9, 30, tzinfo=UTC)
    assert entry.author == "Zed"
    assert "<b>body</b>" in entry.content_html


# --------------------------------------------------------------------------- polling hints in the document

HINTED = rss(
    "<item><title>x</title><link>https://news.example.com/x</link>"
    "<description><![CDATA[<skipHours><hour>5</hour></skipHours>]]></description></item>",
    channel=(
        "<title>Hinted</title><link>https://news.example.com/</link><ttl>60</ttl>"
        "<!-- <skipDays><day>Monday</day></skipDays> -->"
        "<skipHours><hour>0</hour><hour> 1 </hour><hour>24</hour><hour>25</hour><hour>x</hour></skipHours>"
        "<skipDays><day>Saturday</day><day>sunday</day><day>Caturday</day></skipDays>"
        '<sy:updatePeriod xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">Daily</sy:updatePeriod>'
        '<sy:updateFrequency xmlns:sy="http://purl.org/rss/1.0/modules/syndication/">4</sy:updateFrequency>'
    ),
)


def test_polling_hints_are_read_from_the_channel() -> None:
    feed = parse(HINTED)
    assert feed.ttl_minutes == 60
    assert feed.skip_hours == (0, 1)  # 24 is midnight; 25 and "x" are ignored; the item's CDATA is not the channel
    assert feed.skip_days == ("saturday", "sunday")  # the commented-out Monday does not count
    assert (feed.update_period, feed.update_frequency) == ("daily", 4)


def test_polling_hints_after_the_items_and_in_rss1() -> None:
    after = rss("<item><title>x</title></item>").replace(
        "</channel>", "<skipHours><hour>3</hour></skipHours></channel>"
    )
    assert parse(after).skip_hours == (3,)
    rdf = RSS1.replace(
        "<channel ",
        '<channel xmlns:sy="http://purl.org/rss/1.0/modules/syndication/" ',
    ).replace("</channel>", "<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency></channel>")
    feed = parse(rdf)
    assert (feed.update_period, feed.update_frequency) == ("hourly", 2)


def test_no_or_bad_polling_hints() -> None:
    feed = parse(rss(""))
    assert (feed.skip_hours, feed.skip_days, feed.update_period, feed.update_frequency) == ((), (), None, None)
    sy = 'xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"'
    bad = parse(rss("", channel=f"<title>t</title><sy:updatePeriod {sy}>fortnightly</sy:updatePeriod>"
                              f"<sy:updateFrequency {sy}>-3</sy:updateFrequency>"))
    assert (bad.update_period, bad.update_frequency) == (None, None)


# --------------------------------------------------------------------------- JSON Feed

JSON_FEED_11 = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "Json &amp; Co",
    "home_page_url": "https://json.example.com/",
    "feed_url": "https://json.example.com/feed.json",
    "authors": [{"name": "Desk"}],
    "items": [
        {
            "id": "urn:json:1",
            "url": "https://json.example.com/a/1?utm_source=feed",
            "title": "First <em>JSON</em> item",
            "content_html": '<p>Full <b>story</b> <a href="/about">here</a>.</p><script>alert(1)</script>',
            "summary": "A short summary.",
            "date_published": "2026-11-19T10:30:00+02:00",
            "date_modified": "2026-11-19T11:00:00Z",
            "authors": [{"name": "Ann"}, {"name": "Bob"}],
        },
        {"id": 42, "url": "/a/2", "content_text": "Only text\nsecond line & more.", "date_published": "2099-01-01T00:00:00Z"},
        {"url": "https://json.example.com/a/3", "title": "No id: the link is the key", "summary": "Just a summary."},
        {"id": "urn:json:1", "title": "A duplicate id is dropped"},
        {"title": ""},
        "not an object",
    ],
}


def json_body(data: object) -> bytes:
    import json

    return json.dumps(data).encode("utf-8")


def test_json_feed_11() -> None:
    feed = parse(json_body(JSON_FEED_11), headers={"Content-Type": "application/feed+json"})
    assert feed.title == "Json & Co"
    assert feed.link == "https://json.example.com/"
    assert [e.key for e in feed.entries] == ["urn:json:1", "42", "https://json.example.com/a/3"]
    first, second, third = feed.entries
    assert first.title == "First JSON item"
    assert first.link == "https://json.example.com/a/1"  # tracking parameter dropped
    assert "<script" not in first.content_html and "<b>story</b>" in first.content_html
    assert 'href="https://news.example.com/about"' in first.content_html  # relative to the feed's URL
    assert first.text == "Full story here."
    assert first.summary == "A short summary."
    assert first.author == "Ann, Bob"
    assert first.published == datetime(2026, 11, 19, 8, 30, tzinfo=UTC)
    assert first.updated == datetime(2026, 11, 19, 11, 0, tzinfo=UTC)
    assert first.dated
    assert second.link == "https://news.example.com/a/2"
    assert second.text == "Only text\nsecond line & more."
    assert "&amp;" in second.content_html and "<br>" in second.content_html
    assert second.title == "Only text second line & more."  # no title: the text stands in
    assert second.published == NOW  # a date far in the future is clamped
    assert second.author == "Desk"  # the feed's authors, when the item has none
    assert third.text == "Just a summary." and third.dated is False and third.published == NOW
    assert feed.warning == "skipped 1 malformed item"
    assert first.content_hash == hashlib.sha256(("First JSON item\n" + first.text).encode()).hexdigest()


def test_json_feed_10_author_and_detection_without_content_type() -> None:
    data = {
        "version": "https://jsonfeed.org/version/1",
        "title": "One Oh",
        "items": [{"id": "1", "title": "t", "content_text": "x", "author": {"name": "Solo"}}],
    }
    feed = parse(b"\xef\xbb\xbf  \n" + json_body(data))  # BOM and whitespace, no headers
    assert feed.entries[0].author == "Solo"


def test_json_feed_max_entries() -> None:
    data = {"version": "https://jsonfeed.org/version/1.1", "items": [{"id": str(i), "title": f"t{i}"} for i in range(50)]}
    feed = parse(json_body(data), max_entries=5)
    assert [e.key for e in feed.entries] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": [', None, "JSON error: Expecting value at line 1"),
        (b"not json at all", {"Content-Type": "application/feed+json"}, "JSON error"),
        (b'{"items": []}', {"Content-Type": "application/json"}, "not a feed: JSON without a JSON Feed version"),
        (b'["a"]', {"Content-Type": "application/json"}, "not a feed: JSON list"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}', None, "items are not a list"),
        (b"[" * 100_000 + b"]" * 100_000, {"Content-Type": "application/json"}, "JSON error"),
        (b'{"version": 1, "n": ' + b"9" * 5000 + b"}", None, "JSON error"),
    ],
    ids=["truncated", "garbage", "other-json", "array", "items-object", "deep-nesting", "huge-number"],
)
def test_broken_json_feeds(body: bytes, headers: dict[str, str] | None, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(body, headers=headers)
    assert message in caught.value.message


def test_json_feed_hostile_strings_are_cleaned() -> None:
    data = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Bad\u0000 \ud800title",
        "items": [{"id": "x\u0000y", "title": "T\u0007itle", "content_text": "a\ud800b", "url": "javascript:alert(1)"}],
    }
    feed = parse(json_body(data))
    (entry,) = feed.entries
    assert feed.title == "Bad title"
    assert (entry.key, entry.title, entry.text, entry.link) == ("xy", "Title", "ab", None)


def test_xml_sent_as_json_is_still_read_as_xml() -> None:
    assert parse(RSS2, headers={"Content-Type": "application/json"}).title == "World & Co"
