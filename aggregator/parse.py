"""Feed documents (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed 1.0/1.1) to ``ParsedFeed`` records.

What this module does
    ``parse_feed(body, url=..., headers=..., now=...)`` turns the bytes of one
    fetched document into a ``ParsedFeed`` of normalised ``ParsedEntry``
    records, or raises ``ParseError`` with a message fit for a feed's
    ``last_error`` ("not a feed: the document is HTML (...)", "XML error: ...").
    Normalisation (entry keys, canonical links, sanitised HTML, plain text,
    UTC dates, content hashes) happens here, once, so that nothing downstream
    ever sees a feedparser dict. The document's polling hints (``<ttl>``,
    ``<skipHours>``, ``<skipDays>``, ``<sy:updatePeriod>``,
    ``<sy:updateFrequency>``) are read here too (``polling_hints``).

    JSON Feed (https://www.jsonfeed.org/version/1.1/) is read by this module
    itself (``parse_json_feed``): a body starting with ``{``, or sent as
    ``application/feed+json`` / ``application/json``, with a
    ``https://jsonfeed.org/version/1`` or ``/1.1`` version. Its items get the
    same normalisation as feedparser's entries.

    Plain RSS 2.0/0.92 documents (the common case) take a fast path: lxml
    reads the items and ``_fast_parse`` builds the very dicts feedparser
    would, ~5-10 times cheaper; anything outside that verified subset goes to
    feedparser (see "fast path" below, and tests/test_fastparse.py, which
    compares both paths on every corpus document).

What it must not do
    No I/O, no clock (``now`` is passed in), no logging decisions. This is the
    only module that imports ``feedparser`` (and lxml's XML parser, for the
    fast path). HTML is cleaned by
    ``aggregator.text`` (feedparser's own sanitiser and relative-URI rewriting
    are switched off).

XML safety (checked with feedparser 6.0.14, Python 3.11, expat 2.5.0)
    feedparser parses with the stdlib SAX/expat reader. External entities are
    not fetched (feedparser switches ``feature_external_ges`` off, Python has
    not resolved external entities by default since 3.7.1, and parameter
    entities are never loaded), so XXE cannot read files or reach the network.
    Entity expansion ("billion laughs", quadratic blow-up) is stopped by
    expat >= 2.4's amplification limit, but only after ~8 MiB of expansion and
    half a second of work, and feedparser then falls back to its loose parser.
    So ``parse_feed`` screens the DOCTYPE itself before feedparser sees the
    document (``check_entities``): internal entities may only hold short
    literal text or character references, and the total expansion may not
    exceed the document's size; anything else is refused with a clear error.
    External entity declarations are allowed (they are ignored, never fetched).

Hostile and broken input (what ``parse_feed`` does before and after feedparser)
    * character references no string can hold (``&#0;``, surrogates such as
      ``&#xD800;``, beyond U+10FFFF) become U+FFFD and invalid control
      characters are dropped: feedparser's loose parser crashes on the
      former, which would lose every entry of the feed (``fix_char_references``);
    * a document with more than ``max_entries`` entries is cut after that
      many, and closed, *before* feedparser builds a dict per entry: a feed of
      100,000 entries costs what a feed of ``max_entries`` costs (``cut_entries``);
    * every string that leaves this module is free of control characters,
      NULs and lone surrogates (PostgreSQL and UTF-8 refuse them), links are at
      most ``MAX_URL_LENGTH`` and keys at most ``MAX_KEY_LENGTH`` characters, so
      no document can make storage refuse a feed's entries;
    * an exception inside feedparser becomes a ``ParseError``, never a crash.
"""

from __future__ import annotations

import calendar
import collections
import contextlib
import hashlib
import html
import io
import itertools
import json
import re
import threading
import time
import xml.parsers.expat
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax import SAXParseException

import feedparser  # type: ignore[import-untyped]
import lxml.etree  # type: ignore[import-untyped]
from feedparser.datetimes import _parse_date as _feedparser_date  # type: ignore[import-untyped]
from feedparser.html import _cp1252  # type: ignore[import-untyped]
from feedparser.mixin import _FeedParserMixin  # type: ignore[import-untyped]
from feedparser.urls import _urljoin  # type: ignore[import-untyped]

from aggregator.models import ParsedEntry, ParsedFeed
from aggregator.politeness import DAY_NAMES
from aggregator.text import (
    canonical_url,
    collapse_ws,
    html_to_text,
    looks_like_html,
    sanitize_html,
    strip_controls,
    truncate,
)

__all__ = [
    "FUTURE_TOLERANCE",
    "MAX_KEY_LENGTH",
    "MAX_URL_LENGTH",
    "SUMMARY_LENGTH",
    "ParseError",
    "check_entities",
    "parse_feed",
    "parse_json_feed",
    "polling_hints",
]

SUMMARY_LENGTH = 500  # characters of plain-text summary kept
TITLE_FALLBACK_LENGTH = 120  # characters of text used as a missing title
AUTHOR_LENGTH = 200
FEED_TITLE_LENGTH = 200  # characters of a feed's title kept (it names the outlet of every article)
MAX_KEY_LENGTH = 1000  # longer guids are replaced by "hash:" + their sha256
MAX_URL_LENGTH = 2048  # longer links are dropped (storage holds URLs up to this length)
FUTURE_TOLERANCE = timedelta(days=1)  # later dates are clamped to ``now``
MAX_ENTITY_VALUE = 1024  # characters in one internal entity's replacement text
_MIN_EXPANSION_BUDGET = 1024 * 1024  # characters entities may add, at least

_HTML_TYPES = ("text/html", "application/xhtml+xml")


class ParseError(ValueError):
    """Nothing usable in the document; ``message`` says why, for ``last_error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- entity screening

_ENTITY_DECL_RE = re.compile(
    r"""<!ENTITY\s+(%\s+)?([^\s"'>%&;]+)\s+"""
    r"""(?:"([^"]*)"|'([^']*)'|((?:SYSTEM|PUBLIC)(?:\s+(?:"[^"]*"|'[^']*'))+)(?:\s+NDATA\s+\S+?)?)\s*>"""
)
_SAFE_VALUE_RE = re.compile(r"(?:[^&%]|&#[0-9]{1,7};|&#[xX][0-9a-fA-F]{1,6};)*")
_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)


def _as_text(body: bytes) -> str:
    """The body as text for the entity screen: UTF-16/32 decoded, else latin-1.

    Markup characters are ASCII, so latin-1 finds them in every ASCII-compatible
    encoding (UTF-8, the ISO and Windows code pages, Shift_JIS, Big5...).
    """
    head = body[:4]
    for marks, codec in (
        ((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\x00\x00\x00<", b"<\x00\x00\x00"), "utf-32"),
        ((b"\xff\xfe", b"\xfe\xff"), "utf-16"),
    ):
        if head.startswith(marks):
            try:
                if codec == "utf-32" and head in (b"\x00\x00\x00<", b"<\x00\x00\x00"):
                    codec = "utf-32-be" if head[0] == 0 else "utf-32-le"
                return body.decode(codec, "replace")
            except LookupError:  # pragma: no cover - codecs always exist
                break
    if head in (b"\x00<\x00?", b"\x00<\x00!", b"\x00<\x00r", b"\x00<\x00f"):
        return body.decode("utf-16-be", "replace")
    if head in (b"<\x00?\x00", b"<\x00!\x00", b"<\x00r\x00", b"<\x00f\x00"):
        return body.decode("utf-16-le", "replace")
    return body.decode("latin-1")


def _skip_doctype(text: str, i: int) -> int:
    """Index just after the DOCTYPE that starts before ``i`` (its keyword consumed)."""
    n = len(text)
    in_subset = False
    while i < n:
        c = text[i]
        if c in "\"'":
            j = text.find(c, i + 1)
            i = n if j < 0 else j + 1
        elif in_subset and text.startswith("<!--", i):
            j = text.find("-->", i + 4)
            i = n if j < 0 else j + 3
        elif in_subset and text.startswith("<?", i):
            j = text.find("?>", i + 2)
            i = n if j < 0 else j + 2
        elif c == "[":
            in_subset = True
            i += 1
        elif c == "]":
            in_subset = False
            i += 1
        elif c == ">" and not in_subset:
            return i + 1
        else:
            i += 1
    return n


def _prolog_end(text: str) -> int:
    """Index where the root element starts: after declaration, comments, PIs, DOCTYPE."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace() or text[i] == "\ufeff":
            i += 1
        elif text.startswith("<?", i):
            j = text.find("?>", i + 2)
            i = n if j < 0 else j + 2
        elif text.startswith("<!--", i):
            j = text.find("-->", i + 4)
            i = n if j < 0 else j + 3
        elif text[i : i + 9].upper() == "<!DOCTYPE":
            i = _skip_doctype(text, i + 9)
        else:
            return i
    return n


def check_entities(body: bytes) -> None:
    """Refuse documents whose DTD could make the XML parser expand entities abusively.

    Allowed: no entity declarations (nearly every feed); internal entities
    whose replacement text is literal text or character references, at most
    ``MAX_ENTITY_VALUE`` characters, and whose references in the document add
    no more than its own size (or 1 MiB); external entities (never fetched).
    Refused (``ParseError``): entities that reference other entities, parameter
    entity tricks, oversized expansion, declarations this screen cannot read.
    """
    text = _as_text(body)
    if "<!ENTITY" not in text:
        return
    end = _prolog_end(text)
    prolog = _COMMENT_RE.sub("", text[:end])
    declared = prolog.count("<!ENTITY")
    if declared == 0:
        return
    matches = list(_ENTITY_DECL_RE.finditer(prolog))
    if len(matches) != declared:
        raise ParseError(
            "refusing to parse: the document has an XML entity declaration that cannot be checked"
        )
    values: dict[str, str] = {}
    for match in matches:
        parameter, name = match.group(1), match.group(2)
        if match.group(5) is not None:
            continue  # external: never fetched, so it expands to nothing
        value = match.group(3) if match.group(3) is not None else match.group(4)
        if len(value) > MAX_ENTITY_VALUE or not _SAFE_VALUE_RE.fullmatch(value):
            raise ParseError(
                f"refusing to parse: XML entity {name!r} expands to other entities or too much text "
                "(possible entity-expansion attack)"
            )
        if not parameter:
            values[name] = value
    rest = text[end:]
    budget = max(len(body), _MIN_EXPANSION_BUDGET)
    total = 0
    for name, value in values.items():
        if value:
            total += rest.count(f"&{name};") * len(value)
        if total > budget:
            raise ParseError(
                "refusing to parse: XML entities would expand the document beyond its own size "
                "(possible entity-expansion attack)"
            )


# --------------------------------------------------------------------------- hostile bytes


def _ascii_compatible(body: bytes) -> bool:
    """False for UTF-16/32 documents (where markup is not plain ASCII bytes)."""
    head = body[:4]
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return False
    return not (len(head) >= 2 and (head[0] == 0 or head[1] == 0))


_CHARREF_BYTES_RE = re.compile(rb"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")
_ALLOWED_C0 = frozenset({0x9, 0xA, 0xD})


def _fix_reference(match: re.Match[bytes]) -> bytes:
    hexdigits, digits = match.group(1), match.group(2)
    raw = hexdigits if hexdigits is not None else digits
    if len(raw) > 8:  # far beyond U+10FFFF (and int() of thousands of digits is refused)
        return b"&#xFFFD;"
    code = int(raw, 16) if hexdigits is not None else int(raw)
    if code < 0x20 and code not in _ALLOWED_C0:
        return b""  # NUL and C0 controls: never text
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF or code in (0xFFFE, 0xFFFF):
        return b"&#xFFFD;"
    return match.group(0)


def fix_char_references(body: bytes) -> bytes:
    """``body`` with character references that no string may hold replaced.

    ``&#0;`` and other C0 controls are dropped; surrogates, U+FFFE/U+FFFF and
    code points beyond U+10FFFF become ``&#xFFFD;``. XML forbids them all, and
    feedparser's loose parser, which takes over when the XML parser gives up,
    raises on some (``chr(0xD800).encode()``), which would lose the whole
    feed. UTF-16/32 documents are left alone (feedparser's crash is then
    reported as a parse error).
    """
    if b"&#" not in body or not _ascii_compatible(body):
        return body
    return _CHARREF_BYTES_RE.sub(_fix_reference, body)


_ENTRY_START_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]")
_ENTRY_NAMES = frozenset({"item", "entry"})
_MAX_ENTRY_DEPTH = 3  # rss>channel>item is at depth 2, feed>entry and rdf:RDF>item at 1


class _CutHere(Exception):
    def __init__(self, offset: int, open_elements: list[str]) -> None:
        super().__init__(offset)
        self.offset = offset
        self.open_elements = open_elements


def _more_entries_than(body: bytes, limit: int) -> bool:
    """A cheap over-estimate: could the document hold more than ``limit`` entries?"""
    return sum(1 for _ in itertools.islice(_ENTRY_START_RE.finditer(body), limit + 1)) > limit


def cut_entries(body: bytes, max_entries: int) -> bytes:
    """The document cut just before its entry number ``max_entries + 1``, its open
    elements closed; ``body`` itself when it has no more entries than that.

    feedparser builds a dict for every entry of a document before
    ``parse_feed`` can take the first ``max_entries``; cutting first bounds
    that work and its memory. Entries are the ``item``/``entry`` elements
    (any prefix) near the root, found with a streaming expat pass that stops
    at the cut. Documents expat cannot read up to that point (ill-formed, an
    encoding it lacks, UTF-16/32) are returned whole; the size cap of the
    fetcher still bounds them. Whatever follows the entries (rare
    channel-level elements after the last item) is dropped with them.
    """
    if max_entries <= 0 or not _ascii_compatible(body) or not _more_entries_than(body, max_entries):
        return body
    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[str] = []
    entry_depth: int | None = None
    count = 0

    def start(name: str, _attributes: object) -> None:
        nonlocal count, entry_depth
        if entry_depth is None and len(stack) <= _MAX_ENTRY_DEPTH and name.rpartition(":")[2] in _ENTRY_NAMES:
            count += 1
            if count > max_entries:
                raise _CutHere(parser.CurrentByteIndex, list(stack))
            entry_depth = len(stack)
        stack.append(name)

    def end(_name: str) -> None:
        nonlocal entry_depth
        if stack:
            stack.pop()
        if entry_depth is not None and len(stack) == entry_depth:
            entry_depth = None

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(body, True)
    except _CutHere as cut:
        if cut.offset <= 0 or not all(name.isascii() for name in cut.open_elements):
            return body
        closing = "".join(f"</{name}>" for name in reversed(cut.open_elements))
        return body[: cut.offset] + closing.encode("ascii")
    except (xml.parsers.expat.ExpatError, ValueError, RecursionError):
        return body
    return body


# --------------------------------------------------------------------------- errors and warnings

_HTML_SNIFF_RE = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_XML_DECL_RE = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<\?xml\s", re.IGNORECASE)


def _html_error(body: bytes) -> str | None:
    """The error message for an HTML page, or None if ``body`` does not look like one."""
    head = body[:4096]
    match = _HTML_SNIFF_RE.search(head)
    if match is None:
        return None
    title_match = _TITLE_RE.search(body[:65536])
    title = ""
    if title_match:
        title = truncate(html_to_text(title_match.group(1).decode("utf-8", "replace")), 80)
    tag = re.sub(r"[\s>]+$", "", match.group(0).decode("ascii", "replace")).lower()
    shown = f'"{title}"' if title else tag + ">"
    return f"not a feed: the document is HTML ({shown})"


def _foreign_type(headers: Mapping[str, str] | None) -> str | None:
    """The response's media type when it is clearly not a feed (an image, JSON...)."""
    for name, value in (headers or {}).items():
        if name.lower() != "content-type":
            continue
        mime = value.split(";", 1)[0].strip().lower()
        if not mime or "xml" in mime or mime.startswith("text/") or mime in ("application/octet-stream",):
            return None
        if any(word in mime for word in ("rss", "atom", "rdf")):
            return None
        return truncate(collapse_ws(strip_controls(mime)), 100)
    return None


def _describe(exc: object, body: bytes) -> str:
    """A one-line message for feedparser's ``bozo_exception``."""
    if isinstance(exc, SAXParseException):
        line = exc.getLineNumber()
        if isinstance(line, int) and line > 1 and not _XML_DECL_RE.match(body[:256]):
            line -= 1  # feedparser prepended an XML declaration line
        message = collapse_ws(str(exc.getMessage()))
        return f"XML error: {message} at line {line}" if isinstance(line, int) else f"XML error: {message}"
    text = collapse_ws(str(exc)) or type(exc).__name__
    return truncate(text, 300)


# --------------------------------------------------------------------------- normalisation


def _utc(value: Any) -> datetime | None:
    """feedparser's UTC ``struct_time`` (or 9-tuple) as an aware datetime, None if unusable."""
    if value is None:
        return None
    try:
        fields = tuple(value)[:6]
        year, month, day, hour, minute, second = (int(x) for x in fields)
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        try:  # out-of-range fields: let the C library normalise them
            return datetime.fromtimestamp(calendar.timegm(time.struct_time(value)), tz=UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            return None


def _clamp(value: datetime | None, now: datetime) -> datetime | None:
    if value is not None and value > now + FUTURE_TOLERANCE:
        return now
    return value


def _plain(value: Any, kind: str | None) -> str:
    """Plain text of a feed text construct (a title, an author) of MIME type ``kind``."""
    if not isinstance(value, str) or not value:
        return ""
    if (kind or "").lower() in _HTML_TYPES or looks_like_html(value):
        return collapse_ws(html_to_text(value))
    return collapse_ws(strip_controls(value))


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    """``mapping[key]`` or None, bypassing FeedParserDict's key aliases.

    FeedParserDict maps some missing keys to others (``updated_parsed`` to
    ``published_parsed``, with a DeprecationWarning); we want exactly what the
    document said.
    """
    if isinstance(mapping, dict):
        return dict.get(mapping, key)
    return mapping.get(key)


def _detail(entry: Mapping[str, Any], name: str) -> tuple[str, str | None, str | None]:
    """``(value, type, base)`` of a text construct such as ``summary``."""
    detail = _get(entry, f"{name}_detail") or {}
    value = _get(entry, name)
    return (
        value if isinstance(value, str) else "",
        _get(detail, "type") if isinstance(detail, Mapping) else None,
        _get(detail, "base") if isinstance(detail, Mapping) else None,
    )


def _as_html(value: str, kind: str | None) -> str:
    """The construct as HTML: HTML types as they are, plain text escaped.

    The type is feedparser's, which already treats RSS text that looks like
    HTML as HTML; an explicit Atom ``type="text"`` stays text.
    """
    if (kind or "text/html").lower() in _HTML_TYPES:
        return value
    return html.escape(value).replace("\n", "<br>\n")


def _http_link(value: Any, base: str) -> str | None:
    """``value`` resolved against ``base`` and canonicalised, if it is an http(s) URL."""
    link = _long_http_link(value, base)
    return link if link is not None and len(link) <= MAX_URL_LENGTH else None


def _long_http_link(value: Any, base: str) -> str | None:
    """Like ``_http_link`` but of any length (for keys)."""
    if not isinstance(value, str) or not value.strip():
        return None
    link = canonical_url(strip_controls(value), base=base)
    return link if link.lower().startswith(("http://", "https://")) else None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _entry_key(guid: Any, link: str | None, long_link: str | None, title: str, summary: str) -> str:
    """An entry's stable key: its guid/id, else its canonical link, else a hash
    of a link too long to store, else a hash of its title and summary."""
    guid = strip_controls(guid).strip() if isinstance(guid, str) else ""
    if guid:
        return guid if len(guid) <= MAX_KEY_LENGTH else "hash:" + _sha256(guid)
    if link is not None:
        return link
    if long_link is not None:  # a link too long to store still identifies the entry
        return "hash:" + _sha256(long_link)
    return "hash:" + _sha256(title + "\n" + summary)


def _entry(raw: Mapping[str, Any], *, url: str, now: datetime) -> ParsedEntry | None:
    """One feedparser entry as a ``ParsedEntry``; None when it has nothing to show."""
    link = _http_link(_get(raw, "link"), url)

    # Body: content (content:encoded, atom:content), else the summary/description.
    content_value, content_type, content_base = "", None, None
    for item in _get(raw, "content") or ():
        value = _get(item, "value") if isinstance(item, Mapping) else None
        if isinstance(value, str) and value.strip():
            content_value, content_type, content_base = value, _get(item, "type"), _get(item, "base")
            break
    summary_value, summary_type, summary_base = _detail(raw, "summary")

    summary_html = _as_html(summary_value, summary_type) if summary_value else ""
    summary_text = html_to_text(summary_html) if summary_value else ""
    if content_value:
        body_html, body_type, body_base = content_value, content_type, content_base
        content_as_html = _as_html(content_value, content_type)
        # feedparser copies the content into a missing summary: one conversion then
        same = summary_value and content_as_html == summary_html
        text = summary_text if same else html_to_text(content_as_html)
    else:
        body_html, body_type, body_base = summary_value, summary_type, summary_base
        text = summary_text
    content_html = (
        sanitize_html(_as_html(body_html, body_type), base_url=body_base or url) if body_html else ""
    )
    summary = truncate(summary_text or text, SUMMARY_LENGTH)

    title_value, title_type, _ = _detail(raw, "title")
    title = _plain(title_value, title_type)
    if not title and not text and link is None:
        return None
    if not title:
        title = truncate(text, TITLE_FALLBACK_LENGTH) or link or ""

    guid = _get(raw, "id")
    long_link = _long_http_link(_get(raw, "link"), url) if link is None else None
    key = _entry_key(guid, link, long_link, title, summary)

    author_value, author_type, _ = _detail(raw, "author")
    author = truncate(_plain(author_value, author_type), AUTHOR_LENGTH) or None

    published = _clamp(_utc(_get(raw, "published_parsed")), now)
    updated = _clamp(_utc(_get(raw, "updated_parsed")), now)
    return _normalised_entry(key, title, link, summary, content_html, text, author, published, updated, now)


def _normalised_entry(
    key: str,
    title: str,
    link: str | None,
    summary: str,
    content_html: str,
    text: str,
    author: str | None,
    published: datetime | None,
    updated: datetime | None,
    now: datetime,
) -> ParsedEntry:
    """The entry, with the date rules shared by every format: a missing
    ``published`` falls back to ``updated`` and then to ``now`` (and the entry
    is marked undated), a missing ``updated`` to ``published``."""
    dated = published is not None or updated is not None
    published = published or updated or now
    return ParsedEntry(
        key=key,
        title=title,
        link=link,
        summary=summary,
        content_html=content_html,
        text=text,
        author=author,
        published=published,
        updated=updated or published,
        content_hash=_sha256(title + "\n" + text),
        dated=dated,
    )


def _ttl(value: Any) -> int | None:
    try:
        minutes = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes if minutes > 0 else None


# --------------------------------------------------------------------------- polling hints

_PREFIX = r"(?:[A-Za-z_][\w.-]*:)?"
_ENTRY_OPEN_RE = re.compile(rf"<{_PREFIX}(?:item|entry)[\s/>]")
_ENTRY_CLOSE_RE = re.compile(rf"</{_PREFIX}(?:item|entry)\s*>")
_CDATA_RE = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_PERIOD_NAMES = ("hourly", "daily", "weekly", "monthly", "yearly")
_MAX_HINT_SCAN = 1024 * 1024  # characters of channel-level markup searched for hints


def _elements(text: str, name: str) -> list[str]:
    """Texts of the ``name`` elements (any prefix, any case) in ``text``."""
    pattern = rf"<{_PREFIX}{name}(?:\s[^<>]*)?>([^<]*)</{_PREFIX}{name}\s*>"
    return [html.unescape(m.group(1)).strip() for m in re.finditer(pattern, text, re.IGNORECASE)]


def _block(text: str, name: str) -> str:
    """The content of the first ``name`` element (any prefix, any case), or ""."""
    match = re.search(rf"<{_PREFIX}{name}(?:\s[^<>]*)?>(.*?)</{_PREFIX}{name}\s*>", text, re.IGNORECASE | re.DOTALL)
    return match.group(1) if match else ""


def polling_hints(body: bytes) -> dict[str, Any]:
    """The channel-level polling hints of an RSS/Atom document, as ``ParsedFeed`` fields:
    ``skip_hours`` (UTC hours 0..23, 24 read as 0), ``skip_days`` (lower-case
    English day names), ``update_period`` and ``update_frequency`` (the
    syndication module, any prefix). Missing or invalid values are left out.

    A plain text scan of the markup outside the entries (before the first
    ``item``/``entry``, after the last one), comments and CDATA removed: no
    XML parser, so no entity or network surprises, and it reads documents that
    are not well-formed. feedparser reads ``<ttl>`` but none of these.
    """
    text = _as_text(body)
    first = _ENTRY_OPEN_RE.search(text)
    head = text[: first.start()] if first else text
    tail = ""
    if first:
        last_close = collections.deque(_ENTRY_CLOSE_RE.finditer(text, first.start()), maxlen=1)
        tail = text[last_close[0].end() :] if last_close else ""
    outside = _CDATA_RE.sub("", _COMMENT_RE.sub("", head[:_MAX_HINT_SCAN] + "\n" + tail[-_MAX_HINT_SCAN:]))
    hints: dict[str, Any] = {}

    hours: set[int] = set()
    for value in _elements(_block(outside, "skipHours"), "hour")[:48]:
        if value.isdigit() and int(value) <= 24:
            hours.add(int(value) % 24)
    if hours:
        hints["skip_hours"] = tuple(sorted(hours))
    days = {value.lower() for value in _elements(_block(outside, "skipDays"), "day")[:14]}
    if days & set(DAY_NAMES):
        hints["skip_days"] = tuple(name for name in DAY_NAMES if name in days)
    periods = _elements(outside, "updatePeriod")
    if periods and periods[0].lower() in _PERIOD_NAMES:
        hints["update_period"] = periods[0].lower()
    frequencies = _elements(outside, "updateFrequency")
    if frequencies and frequencies[0].isdigit() and 0 < int(frequencies[0]) <= 1_000_000:
        hints["update_frequency"] = int(frequencies[0])
    return hints


# --------------------------------------------------------------------------- JSON Feed

JSON_FEED_TYPES = ("application/feed+json", "application/json")
_JSON_FEED_VERSION_RE = re.compile(r"^https?://jsonfeed\.org/version/1(?:\.\d+)?/?$")


def _media_type(headers: Mapping[str, str] | None) -> str:
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def _looks_like_json(body: bytes, headers: Mapping[str, str] | None) -> bool:
    """A body to read as JSON: it starts with ``{``, or it is sent as JSON and is not markup."""
    start = body.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
    if start == b"{":
        return True
    mime = _media_type(headers)
    return (mime in JSON_FEED_TYPES or mime.endswith("+json")) and start not in (b"<", b"")


def _json_str(value: Any) -> str:
    """A JSON string value, free of control characters and lone surrogates; "" otherwise."""
    return strip_controls(value) if isinstance(value, str) else ""


def _json_date(value: Any, now: datetime) -> datetime | None:
    """An RFC 3339 date (JSON Feed's ``date_published``/``date_modified``) in UTC."""
    text = _json_str(value).strip()
    if not text or len(text) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return _clamp(parsed.astimezone(UTC), now)
    except (OverflowError, ValueError):
        return None


def _json_authors(item: Mapping[str, Any]) -> str:
    """Names of ``authors`` (1.1), else of ``author`` (1.0), joined."""
    authors = item.get("authors")
    if not isinstance(authors, list):
        single = item.get("author")
        authors = [single] if isinstance(single, dict) else []
    names = [collapse_ws(_json_str(a.get("name"))) for a in authors[:20] if isinstance(a, dict)]
    return ", ".join(name for name in names if name)


def _json_entry(item: Mapping[str, Any], *, url: str, now: datetime, feed_author: str) -> ParsedEntry | None:
    """One JSON Feed item as a ``ParsedEntry`` (the rules of ``_entry``); None when empty."""
    raw_link = _json_str(item.get("url")) or _json_str(item.get("external_url"))
    link = _http_link(raw_link, url)

    content_html = _json_str(item.get("content_html"))
    content_text = _json_str(item.get("content_text"))
    summary_value = _json_str(item.get("summary"))
    summary_text = html_to_text(_as_html(summary_value, "text/plain")) if summary_value.strip() else ""
    if content_html.strip():
        body_html = content_html
    elif content_text.strip():
        body_html = _as_html(content_text, "text/plain")
    elif summary_value.strip():
        body_html = _as_html(summary_value, "text/plain")
    else:
        body_html = ""
    text = html_to_text(body_html) if body_html else ""
    content_html = sanitize_html(body_html, base_url=url) if body_html else ""
    summary = truncate(summary_text or text, SUMMARY_LENGTH)

    title = _plain(_json_str(item.get("title")), None)
    if not title and not text and link is None:
        return None
    if not title:
        title = truncate(text, TITLE_FALLBACK_LENGTH) or link or ""

    guid = item.get("id")
    if isinstance(guid, int | float) and not isinstance(guid, bool):
        guid = str(guid)  # the spec says string; numbers are common in the wild
    long_link = _long_http_link(raw_link, url) if link is None else None
    key = _entry_key(guid, link, long_link, title, summary)

    author = truncate(_json_authors(item) or feed_author, AUTHOR_LENGTH) or None
    published = _json_date(item.get("date_published"), now)
    updated = _json_date(item.get("date_modified"), now)
    return _normalised_entry(key, title, link, summary, content_html, text, author, published, updated, now)


def parse_json_feed(body: bytes, *, url: str, now: datetime, max_entries: int = 1000) -> ParsedFeed:
    """Parse a JSON Feed 1.0/1.1 document (see ``parse_feed`` for the arguments).

    Raises ``ParseError`` for broken JSON, JSON that is not a JSON Feed (no
    ``https://jsonfeed.org/version/1`` or ``/1.1`` version) and items that are
    not a list. Only the first ``max_entries`` items are read; a malformed
    item is skipped (and counted in ``warning``), never the feed.
    """
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        data = json.loads(body.decode("utf-8", "replace"))
    except json.JSONDecodeError as exc:
        raise ParseError(f"JSON error: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # absurd nesting, huge integers
        raise ParseError(f"JSON error: {truncate(collapse_ws(str(exc)), 200) or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ParseError(f"not a feed: JSON {type(data).__name__} instead of a JSON Feed object")
    version = data.get("version")
    if not isinstance(version, str) or not _JSON_FEED_VERSION_RE.match(version.strip()):
        raise ParseError("not a feed: JSON without a JSON Feed version (https://jsonfeed.org/version/1.1)")
    items = data.get("items", [])
    if not isinstance(items, list):
        raise ParseError("not a feed: JSON Feed whose items are not a list")

    feed_author = _json_authors(data)
    entries: list[ParsedEntry] = []
    seen: set[str] = set()
    skipped = 0
    for item in items[: max(max_entries, 0)]:
        if not isinstance(item, dict):
            skipped += 1
            continue
        try:
            entry = _json_entry(item, url=url, now=now, feed_author=feed_author)
        except Exception:  # one malformed item must not lose the feed  # noqa: BLE001
            skipped += 1
            continue
        if entry is None or entry.key in seen:
            continue
        seen.add(entry.key)
        entries.append(entry)
    warnings = []
    if "items" not in data:
        warnings.append("JSON Feed without items")
    if skipped:
        warnings.append(f"skipped {skipped} malformed item{'' if skipped == 1 else 's'}")
    return ParsedFeed(
        title=truncate(_plain(_json_str(data.get("title")), None), FEED_TITLE_LENGTH) or None,
        link=_http_link(_json_str(data.get("home_page_url")), url),
        entries=tuple(entries),
        warning="; ".join(warnings) or None,
    )



# --------------------------------------------------------------------------- fast path
#
# feedparser costs ~400-700 us per entry (a Python SAX handler per element, a
# FeedParserDict per construct, deep copies). Most real documents are plain
# RSS 2.0 whose items hold a handful of leaf elements; for those, lxml (C)
# reads the items and ``_fast_items`` builds, element by element, the very
# dicts feedparser would build (same stripping, URI joining, HTML guess for
# titles, UTF-8 repair, cp1252 mapping, date parsing), and ``_entry`` then
# normalises them as usual. The channel (title, link, ttl, encoding, version,
# warnings) is still read by feedparser, on the document with its items cut
# out (a few hundred bytes).
#
# Anything outside that narrow, verified subset makes ``_fast_parse`` return
# None and the whole document goes to feedparser: a DOCTYPE, xml:base, an
# encoding other than UTF-8, a document lxml or feedparser finds ill-formed
# (bozo), other formats (Atom, RDF, RSS 0.90/0.91/1.0), an item with attributes,
# with an element not in ``_FAST_FIELDS``/``_FAST_IGNORED``, with a repeated
# field, with nested markup, comments or processing instructions in it, or
# anything between or after the items. tests/test_fastparse.py checks that
# both paths give equal ``ParsedFeed`` records on every document of the
# corpora that the fast path accepts.

_CONTENT_NS = "{http://purl.org/rss/1.0/modules/content/}"
_DC_NS = "{http://purl.org/dc/elements/1.1/}"
_MEDIA_NS = "{http://search.yahoo.com/mrss/}"
_ATOM_NS = "{http://www.w3.org/2005/Atom}"
#: Item children read, and the feedparser key each fills. None has attributes
#: (except ``guid``'s ``isPermaLink``), and each appears at most once per item
#: (``author`` and ``dc:creator`` count as one).
_FAST_FIELDS = {
    "title": "title",
    "link": "link",
    "guid": "id",
    "pubDate": "published",
    "description": "summary",
    _CONTENT_NS + "encoded": "content",
    "author": "author",
    _DC_NS + "creator": "author",
}
#: Item children that feedparser keeps only under keys ``_entry`` never reads
#: (tags, enclosures, media, comments URL), as leaves with any attributes.
_FAST_IGNORED = frozenset(
    {"category", "comments", "enclosure", _MEDIA_NS + "content", _MEDIA_NS + "thumbnail", _MEDIA_NS + "credit"}
)
_FAST_ATOM_LINK = _ATOM_NS + "link"  # ignored too, unless it could be the entry's alternate link
_FAST_VERSIONS = frozenset({"rss20", "rss092"})
_FAST_ITEM_START_RE = re.compile(rb"<item[\s/>]")
_FAST_ITEM_END_RE = re.compile(rb"</item\s*>")
_FAST_TAIL_RE = re.compile(rb"\s*</channel\s*>\s*</rss\s*>\s*")
_FAST_DECLARATION_RE = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_LINK_REFERENCE_RE = re.compile("&([A-Za-z0-9_]+);")
_looks_like_html_fp = _FeedParserMixin.looks_like_html
_RFC822_RE = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]) (?:([+-])([01][0-9])([0-5][0-9])|GMT|UTC|UT|Z)"
)
_C1_RE = re.compile("[\x80-\x9f]")  # the characters feedparser maps as cp1252
_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
_fast_local = threading.local()


def _fast_xml_parser() -> Any:
    """This thread's strict lxml parser (lxml parsers are not shared between threads)."""
    parser = getattr(_fast_local, "parser", None)
    if parser is None:
        parser = lxml.etree.XMLParser(
            resolve_entities=False, no_network=True, recover=False, huge_tree=False, load_dtd=False
        )
        _fast_local.parser = parser
    return parser


def _fp_text(value: str) -> str:
    """What feedparser's ``pop`` makes of an element's text after the per-element
    steps: the UTF-8-read-as-latin-1 repair and the cp1252 mapping (both leave
    ASCII text as it is)."""
    if value.isascii():
        return value
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        value = value.encode("iso-8859-1").decode("utf-8")
    return value.translate(_cp1252) if _C1_RE.search(value) else value


def _fp_date(value: str) -> Any:
    """feedparser's ``_parse_date`` (a UTC 9-tuple or None); the common RFC 822
    form is read here, about 20 times faster, with the same result."""
    match = _RFC822_RE.fullmatch(value)
    if match is None:
        return _feedparser_date(value)
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    except ValueError:
        return _feedparser_date(value)
    if sign is not None:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        moment = moment - offset if sign == "+" else moment + offset
    return moment.utctimetuple()


def _has_base(element: Any) -> bool:
    """Whether ``element`` has an attribute feedparser could take as its base URI."""
    return any(name.lower().endswith("base") for name in element.attrib)


def _fast_item(item: Any) -> dict[str, Any] | None:
    """One RSS 2.0 item as the dict feedparser builds for it, or None when the
    item is outside the fast path's subset."""
    if item.attrib:
        return None
    raw: dict[str, Any] = {}
    seen: set[str] = set()
    guidislink = False
    for child in item:
        tag = child.tag
        if not isinstance(tag, str) or len(child):
            return None  # a comment, a processing instruction, nested markup
        key = _FAST_FIELDS.get(tag)
        if key is None:
            if _has_base(child):
                return None
            if tag in _FAST_IGNORED:
                continue
            if tag == _FAST_ATOM_LINK:
                rel = child.get("rel")
                if rel is not None and rel.lower() != "alternate" and child.get("href") is not None:
                    continue
            return None
        if key in seen:
            return None
        seen.add(key)
        attributes = child.attrib
        if attributes:
            if key != "id" or len(attributes) != 1 or "isPermaLink" not in attributes:
                return None
            guidislink = attributes["isPermaLink"] == "true"
        elif key == "id":
            guidislink = True
        value = (child.text or "").strip()
        if key == "title":
            kind = "text/html" if _looks_like_html_fp(value) else "text/plain"
            value = _fp_text(value)
            raw["title"] = value
            raw["title_detail"] = {"type": kind, "base": "", "value": value}
        elif key == "link":
            if value:
                value = _urljoin("", value)
            value = _fp_text(value)
            if "&" in value:
                value = _LINK_REFERENCE_RE.sub(r"&\g<1>", value.replace("&amp;", "&"))
            raw["link"] = value
        elif key == "id":
            if value and guidislink:
                value = _urljoin("", value)
            value = _fp_text(value)
            raw["id"] = value
            if guidislink:
                raw.setdefault("link", value)
        elif key == "published":
            value = _fp_text(value)
            raw["published"] = value
            raw["published_parsed"] = _fp_date(value)
        elif key == "summary":
            value = _fp_text(value)
            raw["summary"] = value
            raw["summary_detail"] = {"type": "text/html", "base": "", "value": value}
        elif key == "content":
            value = _fp_text(value)
            raw["content"] = [{"type": "text/html", "base": "", "value": value}]
            raw.setdefault("summary", value)
        else:  # author
            raw["author"] = _fp_text(value)
    return raw


def _fast_parse(body: bytes, headers: Mapping[str, str] | None) -> Any | None:
    """feedparser's result for a plain RSS 2.0 document (``entries``, ``feed``,
    ``version``, ``bozo``), built the fast way; None when the document is
    outside the fast path's subset (see above) and must go to feedparser."""
    if body[:1] != b"<" or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return None
    declared = _FAST_DECLARATION_RE.match(body, 0, 256)
    if declared is not None and declared.group(1).lower() != b"utf-8":
        return None
    starts = [m.start() for m in _FAST_ITEM_START_RE.finditer(body)]
    if not starts:
        return None
    ends = [m.end() for m in _FAST_ITEM_END_RE.finditer(body)]
    if len(ends) != len(starts) or not _FAST_TAIL_RE.fullmatch(body, ends[-1]):
        return None
    try:
        root = lxml.etree.fromstring(body, parser=_fast_xml_parser())
    except (lxml.etree.XMLSyntaxError, ValueError):
        return None
    if root.tag != "rss" or len(root) != 1 or root[0].tag != "channel":
        return None
    if _has_base(root) or _has_base(root[0]):
        return None  # xml:base (or a bare base attribute, which feedparser honours too)
    children = list(root[0])
    first = next((i for i, child in enumerate(children) if child.tag == "item"), None)
    if first is None:
        return None
    items = children[first:]
    if len(items) != len(starts) or any(child.tag != "item" for child in items):
        return None
    entries = []
    for item in items:
        raw = _fast_item(item)
        if raw is None:
            return None
        entries.append(raw)
    head = body[: starts[0]] + body[ends[-1] :]
    result = feedparser.parse(
        io.BytesIO(head),
        response_headers=_feedparser_headers(headers),
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    if (
        _get(result, "bozo")
        or _get(result, "entries")
        or _get(result, "version") not in _FAST_VERSIONS
        or str(_get(result, "encoding") or "").lower() != "utf-8"
    ):
        return None
    result["entries"] = entries
    return result


# --------------------------------------------------------------------------- feedparser


def _feedparser_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The response headers feedparser should see: the encoding hints.

    Content-Encoding and friends are left out: the body is already decoded.
    """
    result: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower in ("content-type", "content-language"):
            result[lower] = value
    # Without a Content-Type feedparser flags the document ("no Content-type
    # specified"); application/xml makes it honour the XML declaration's encoding.
    # No Content-Location: feedparser would resolve relative guids against it,
    # turning "<guid>123</guid>" into a URL that changes when the feed moves.
    # We resolve links against the feed URL ourselves (xml:base still applies).
    result.setdefault("content-type", "application/xml")
    return result


def parse_feed(
    body: bytes,
    *,
    url: str,
    headers: Mapping[str, str] | None = None,
    now: datetime,
    max_entries: int = 1000,
    fast: bool = True,
) -> ParsedFeed:
    """Parse one feed document.

    ``url`` is the document's final URL (the base for relative links),
    ``headers`` the HTTP response headers (their charset is honoured), ``now``
    the fetch time (entries without dates get it; dates more than a day ahead
    are clamped to it). At most ``max_entries`` entries are read, in document
    order (the document is cut before the rest is parsed); entries repeating
    an earlier key, or with nothing to show, are dropped.

    A JSON Feed (a body starting with ``{``, or sent as JSON) is read by
    ``parse_json_feed``. Plain RSS 2.0 is read by a fast path that gives what
    feedparser gives (see ``_fast_parse``); ``fast=False`` sends every
    document to feedparser (the tests compare the two).

    Raises ``ParseError`` when the body is empty, is not a feed (an HTML page,
    other XML, other JSON), is broken XML that yields no entries, is broken
    JSON, or declares unsafe entities. A broken document that still yields entries is returned with its
    error in ``warning``.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    if not body or not body.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise ParseError("not a feed: empty document")
    if _looks_like_json(body, headers):
        return parse_json_feed(body, url=url, now=now, max_entries=max_entries)
    check_entities(body)
    hints = polling_hints(body)
    body = cut_entries(fix_char_references(body), max_entries)

    try:
        result = _fast_parse(body, headers) if fast else None
        if result is None:
            result = feedparser.parse(
                io.BytesIO(body),
                response_headers=_feedparser_headers(headers),
                sanitize_html=False,
                resolve_relative_uris=False,
            )
    except Exception as exc:  # feedparser's loose parser has crashed on odd bytes  # noqa: BLE001
        html_message = _html_error(body)
        raise ParseError(html_message or f"cannot parse the document: {_describe(exc, body)}") from exc
    raw_entries = _get(result, "entries") or []
    version = _get(result, "version") or ""
    bozo = bool(_get(result, "bozo"))
    problem = _get(result, "bozo_exception") if bozo else None
    fatal = isinstance(problem, SAXParseException)

    if not raw_entries and (not version or fatal):
        html_message = _html_error(body)
        if html_message is not None:
            raise ParseError(html_message)
        foreign = _foreign_type(headers)
        if foreign is not None:
            raise ParseError(f"not a feed: the server sent {foreign}")
        if problem is not None:
            raise ParseError(_describe(problem, body))
        raise ParseError("not a feed: no RSS, Atom or RDF document found")

    entries: list[ParsedEntry] = []
    seen: set[str] = set()
    skipped = 0
    for raw in raw_entries:
        if len(entries) >= max_entries:
            break
        try:
            entry = _entry(raw, url=url, now=now)
        except Exception:  # one malformed entry must not lose the feed  # noqa: BLE001
            skipped += 1
            continue
        if entry is None or entry.key in seen:
            continue
        seen.add(entry.key)
        entries.append(entry)

    if not entries and fatal:
        raise ParseError(_describe(problem, body))

    feed = _get(result, "feed") or {}
    if not isinstance(feed, Mapping):
        feed = {}
    title_value, title_type, _ = _detail(feed, "title")
    warnings = []
    if problem is not None:
        warnings.append(_describe(problem, body))
    if skipped:
        warnings.append(f"skipped {skipped} malformed entr{'y' if skipped == 1 else 'ies'}")
    return ParsedFeed(
        title=truncate(_plain(title_value, title_type), FEED_TITLE_LENGTH) or None,
        link=_http_link(_get(feed, "link"), url),
        entries=tuple(entries),
        ttl_minutes=_ttl(_get(feed, "ttl")),
        warning="; ".join(warnings) or None,
        **hints,
    )
