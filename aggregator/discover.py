"""Feed discovery: from a site's home page to the feeds it offers.

What this module does
    ``discover(url, settings, now=...)`` fetches ``url`` (with
    ``aggregator.fetch.fetch``: the same size and time limits and address rules
    as any feed) and says what it is:

    * ``kind="feed"``: the URL is itself a feed (``parse_feed`` accepts it);
    * ``kind="page"``: an HTML page; its ``candidates`` are the feeds it
      announces with ``<link rel="alternate" type="application/rss+xml |
      application/atom+xml | application/rdf+xml | application/feed+json |
      application/json">`` (relative hrefs resolved against the page or its
      ``<base href>``), in document order. Only when it announces none are the
      common paths (``COMMON_PATHS`` at the site's root) fetched, and each is
      kept only when ``parse_feed`` accepts it. ``application/json`` links are
      checked the same way: WordPress, for one, announces its REST API with
      that type on every page;
    * ``kind="other"``: neither a feed nor HTML (``problem`` says why).

    Fetch errors of ``url`` itself propagate (``FetchError``); those of probes
    only mean "not a feed there". The pure parts (``find_feed_links``,
    ``common_feed_urls``, ``looks_like_html``, ``no_feed_message``) take data
    and return data.

What it must not do
    No storage and no prompting: choosing among several candidates is the
    caller's (the CLI's) business. It never runs on the web request path (the
    web layer never fetches). HTML is read with lxml's HTML parser with the
    network off; nothing in a page is ever loaded except the probes above.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import lxml.etree  # type: ignore[import-untyped]
import lxml.html  # type: ignore[import-untyped]

from aggregator import fetch as fetch_module
from aggregator import parse as parse_module
from aggregator.config import Settings
from aggregator.models import ParsedFeed
from aggregator.text import collapse_ws, strip_controls, truncate

__all__ = [
    "COMMON_PATHS",
    "FEED_TYPES",
    "Candidate",
    "Discovery",
    "common_feed_urls",
    "discover",
    "find_feed_links",
    "looks_like_feed_url",
    "looks_like_html",
    "no_feed_message",
]

FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/rdf+xml",
    "application/feed+json",
    "application/json",
)
UNCHECKED_TYPES = frozenset(FEED_TYPES) - {"application/json"}  # trusted as announced
COMMON_PATHS = ("/feed", "/feed/", "/rss", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml", "/feed.json")
MAX_CANDIDATES = 50  # link tags kept from one page
FEED_EXTENSIONS = (".xml", ".rss", ".rdf", ".atom", ".json")
FEED_NAMES = frozenset({"feed", "feeds", "rss", "rss2", "atom"})
_HTML_SNIFF_RE = re.compile(rb"<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.IGNORECASE)
_TITLE_LENGTH = 200


@dataclass(frozen=True)
class Candidate:
    url: str
    title: str | None  # the link's title attribute, or the feed's own title when probed
    type: str  # the announced (or served) media type
    source: Literal["link", "probe"]


@dataclass(frozen=True)
class Discovery:
    url: str  # what was asked about (the final URL when it is a page)
    kind: Literal["feed", "page", "other"]
    candidates: tuple[Candidate, ...] = ()
    title: str | None = None  # the page's <title>
    probed: tuple[str, ...] = ()  # URLs fetched in search of a feed
    problem: str | None = None  # kind="other": why it is neither a feed nor a page


# --------------------------------------------------------------------------- pure parts


def looks_like_feed_url(url: str) -> bool:
    """True when ``url``'s path names a feed (``.../news.xml``, ``.../feed.json``,
    ``.../feed/``, ``.../rss``): ``feeds add`` then subscribes without fetching."""
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return False
    last = path.rstrip("/").rpartition("/")[2].lower()
    return last.endswith(FEED_EXTENSIONS) or last in FEED_NAMES


def looks_like_html(body: bytes, headers: Mapping[str, str] | None = None) -> bool:
    """True for an HTML document: by its Content-Type, else by its first bytes."""
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            mime = value.split(";", 1)[0].strip().lower()
            if mime in ("text/html", "application/xhtml+xml"):
                return True
    return _HTML_SNIFF_RE.search(body[:4096]) is not None


def _charset(headers: Mapping[str, str] | None) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            match = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", value, re.IGNORECASE)
            if match:
                try:
                    return codecs.lookup(match.group(1)).name
                except LookupError:
                    return None
    return None


def _http_url(href: str, base: str) -> str | None:
    """``href`` resolved against ``base``, without its fragment, if it is http(s)."""
    href = strip_controls(href).strip()
    if not href:
        return None
    try:
        absolute = urljoin(base, href)
        parts = urlsplit(absolute)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return urlunsplit(parts._replace(fragment=""))


def _parse_html(body: bytes, headers: Mapping[str, str] | None) -> lxml.etree._Element | None:
    parser = lxml.html.HTMLParser(
        encoding=_charset(headers), no_network=True, remove_comments=True, remove_pis=True
    )
    try:
        return lxml.html.document_fromstring(body, parser=parser)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError):
        return None


def page_title(body: bytes, headers: Mapping[str, str] | None = None) -> str | None:
    root = _parse_html(body, headers)
    if root is None:
        return None
    title = root.findtext(".//title")
    return truncate(collapse_ws(strip_controls(title or "")), _TITLE_LENGTH) or None


def find_feed_links(body: bytes, base_url: str, headers: Mapping[str, str] | None = None) -> list[Candidate]:
    """The feeds an HTML page announces with ``<link rel="alternate" type=...>``,
    in document order, each URL once (resolved against ``<base href>`` or ``base_url``)."""
    root = _parse_html(body, headers)
    if root is None:
        return []
    base = base_url
    for element in root.iter("base"):
        href = element.get("href")
        if href:
            base = _http_url(href, base_url) or base_url
            break
    found: list[Candidate] = []
    seen: set[str] = set()
    for element in root.iter("link"):
        rel = (element.get("rel") or "").lower().split()
        kind = (element.get("type") or "").split(";", 1)[0].strip().lower()
        if "alternate" not in rel or kind not in FEED_TYPES:
            continue
        url = _http_url(element.get("href") or "", base)
        if url is None or url in seen:
            continue
        seen.add(url)
        title = truncate(collapse_ws(strip_controls(element.get("title") or "")), _TITLE_LENGTH) or None
        found.append(Candidate(url=url, title=title, type=kind, source="link"))
        if len(found) >= MAX_CANDIDATES:
            break
    return found


def common_feed_urls(page_url: str) -> list[str]:
    """The ``COMMON_PATHS`` at the root of ``page_url``'s site."""
    parts = urlsplit(page_url)
    return [urlunsplit((parts.scheme, parts.netloc, path, "", "")) for path in COMMON_PATHS]


def no_feed_message(discovery: Discovery) -> str:
    """Why nothing can be subscribed at ``discovery.url``, for the user."""
    if discovery.kind == "other":
        return f"{discovery.url} is not a feed: {discovery.problem}"
    shown = f' ("{discovery.title}")' if discovery.title else ""
    tried = ", ".join(urlsplit(url).path for url in discovery.probed) or "nothing"
    return (
        f"no feed found at {discovery.url}: the page{shown} announces no feed "
        f'(no <link rel="alternate"> of a feed type) and none of {tried} on that site is a feed'
    )


# --------------------------------------------------------------------------- I/O


@dataclass(frozen=True)
class _Got:
    url: str  # to subscribe: the URL asked for, or where a permanent redirect leads
    location: str  # where the body came from (the base of relative links)
    body: bytes
    headers: dict[str, str]


def _get(url: str, settings: Settings, client: fetch_module.Client) -> _Got:
    result = fetch_module.fetch(
        url,
        etag=None,
        last_modified=None,
        timeout=settings.fetch_timeout,
        max_bytes=settings.max_feed_bytes,
        user_agent=settings.user_agent,
        allow_private=settings.allow_private,
        allow_files=False,
        client=client,
    )
    # A temporary redirect keeps the URL asked for; a permanent one is followed.
    return _Got(result.permanent_redirect or url, result.url, result.body or b"", result.headers)


def _parse(got: _Got, settings: Settings, now: datetime) -> ParsedFeed:
    return parse_module.parse_feed(
        got.body, url=got.location, headers=got.headers, now=now, max_entries=settings.max_entries_per_feed
    )


def _probe(url: str, settings: Settings, client: fetch_module.Client, now: datetime) -> tuple[Candidate, bytes] | None:
    """The candidate (and its body) when ``url`` serves a feed, else None."""
    try:
        got = _get(url, settings, client)
        parsed = _parse(got, settings, now)
    except (fetch_module.FetchError, parse_module.ParseError):
        return None
    mime = got.headers.get("content-type", "").split(";", 1)[0].strip().lower() or "application/xml"
    return Candidate(got.url, parsed.title, mime, "probe"), got.body


def discover(url: str, settings: Settings, *, now: datetime) -> Discovery:
    """What ``url`` is, and the feeds it offers when it is an HTML page (see the
    module docstring). Raises ``FetchError`` when ``url`` cannot be fetched."""
    with fetch_module.make_client(max_connections=2) as client:
        page = _get(url, settings, client)
        try:
            _parse(page, settings, now)
        except parse_module.ParseError as exc:
            if not looks_like_html(page.body, page.headers):
                return Discovery(url=url, kind="other", problem=exc.message)
        else:
            return Discovery(url=url, kind="feed")

        title = page_title(page.body, page.headers)
        announced = find_feed_links(page.body, page.location, page.headers)
        candidates: list[Candidate] = []
        probed: list[str] = []
        seen_bodies: set[str] = set()
        for candidate in announced:
            if candidate.type in UNCHECKED_TYPES:
                candidates.append(candidate)
                continue
            probed.append(candidate.url)
            found = _probe(candidate.url, settings, client, now)
            if found is not None and not any(c.url == found[0].url for c in candidates):
                checked = found[0]
                candidates.append(Candidate(checked.url, candidate.title or checked.title, candidate.type, "link"))
        if not announced:
            for probe_url in common_feed_urls(page.location):
                probed.append(probe_url)
                found = _probe(probe_url, settings, client, now)
                if found is None:
                    continue
                digest = hashlib.sha256(found[1]).hexdigest()
                if digest in seen_bodies or any(c.url == found[0].url for c in candidates):
                    continue  # /feed and /feed/ (or /rss) are often one feed
                seen_bodies.add(digest)
                candidates.append(found[0])
        return Discovery(url=page.url, kind="page", candidates=tuple(candidates), title=title, probed=tuple(probed))
