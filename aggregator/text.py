"""Text and URL cleaning: pure functions from strings to strings.

What this module does
    * ``html_to_text``: HTML (fragment or document) to plain text, for
      similarity, search and summaries.
    * ``sanitize_html``: untrusted HTML to a small, safe subset that the web
      pages embed and the Atom publisher republishes.
    * ``collapse_ws`` / ``truncate`` / ``strip_controls``: whitespace, length
      and control-character helpers.
    * ``canonical_url``: one spelling per article URL (tracking parameters
      removed), used for entry keys and for "same link" detection.

What it must not do
    No I/O, no clock, no global state beyond caches of pure results; never
    raise on odd input (garbage in, best-effort text out). This is the only
    module that imports ``lxml.html`` and ``nh3`` (``aggregator.parse`` uses
    lxml's XML parser for its fast path); everything else calls these
    functions instead.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit

import lxml.etree  # type: ignore[import-untyped]
import lxml.html  # type: ignore[import-untyped]
import nh3

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_TAGS",
    "TRACKING_PARAMS",
    "TRACKING_PREFIXES",
    "URL_SCHEMES",
    "canonical_url",
    "collapse_ws",
    "html_to_text",
    "looks_like_html",
    "sanitize_html",
    "strip_controls",
    "truncate",
]

# --------------------------------------------------------------------------- whitespace

_WS_RE = re.compile(r"\s+")
_INLINE_WS_RE = re.compile(r"[^\S\n]+")  # whitespace except newline
# C0 controls (except tab, newline, carriage return), DEL, lone surrogates and
# non-characters: lxml refuses some of them and none of them belong in text.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# The characters lxml refuses in a text it is given (its check_string_utf8: ASCII
# controls but tab, newline and carriage return). A tree can hold them (from a
# numeric character reference such as ``&#1;``); setting such a text raises ValueError.
_XML_REFUSED_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])


def strip_controls(text: str) -> str:
    """``text`` without C0 controls (except tab, newline, carriage return), DEL,
    lone surrogates and non-characters.

    None of them belong in text, and storage refuses some of them (PostgreSQL
    has no NUL in text; a lone surrogate cannot be encoded as UTF-8).
    """
    # Same result as ``_CONTROL_RE.sub("", text)``, several times faster on long
    # text: the C0 controls and DEL are single bytes in UTF-8 (never part of a
    # multi-byte sequence), so they are deleted from the encoded bytes; text with
    # a surrogate (it cannot be encoded) or a non-character takes the regex.
    # (A one-character ``in`` is a memchr-like scan, and needs no scan at all when
    # the string's width cannot hold the character: ASCII and Latin-1 text.)
    if "\ufffe" in text or "\uffff" in text:
        return _CONTROL_RE.sub("", text)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return _CONTROL_RE.sub("", text)
    kept = data.translate(None, _CONTROL_BYTES)
    return text if len(kept) == len(data) else kept.decode("utf-8")


def collapse_ws(text: str) -> str:
    """Every run of whitespace (newlines included) becomes one space; ends stripped."""
    # str.split() splits on exactly the characters ``\s`` matches (str.isspace).
    return " ".join(text.split())


def _squash_ws(text: str) -> str:
    """Every run of whitespace becomes one space, ends included (``_WS_RE.sub(" ", text)``)."""
    words = text.split()
    if not words:
        return " " if text else text
    squashed = " ".join(words)
    if text[0].isspace():
        squashed = " " + squashed
    if text[-1].isspace():
        squashed += " "
    return squashed


def truncate(text: str, n: int, ellipsis: str = "…") -> str:
    """``text`` shortened to at most ``n`` characters, cut at a word boundary.

    Whitespace is collapsed first. When something was cut, ``ellipsis`` is
    appended (and counted in ``n``). A single word longer than the limit is cut
    mid-word rather than dropped.
    """
    if n <= 0:
        return ""
    # Only the first n + 1 characters of the collapsed text are read, and collapsing
    # a prefix of ``text`` gives a prefix of the collapsed text (its last word maybe
    # cut): a long text is collapsed only as far as needed.
    prefix = n + n // 4 + 64
    head = collapse_ws(text[:prefix]) if len(text) > prefix else ""
    text = head if len(head) > n else collapse_ws(text)
    if len(text) <= n:
        return text
    room = max(n - len(ellipsis), 0)
    if room == 0:
        return ellipsis[:n]
    cut = text[: room + 1]
    space = cut.rfind(" ")
    # cut at a word boundary unless it is too far back
    head = cut[:space] if space > room // 2 else text[:room]
    return head.rstrip(" ,;:.-–—") + ellipsis


# --------------------------------------------------------------------------- HTML to text

# Elements whose content is never readable text.
# (Not object/embed: libxml2 does not treat <embed> as empty and would swallow
# what follows; their content is fallback text anyway.)
_DROP_TAGS = ("script", "style", "template", "head", "svg", "math", "iframe", "select")
# Elements that start a new line of text.
_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hgroup",
        "hr",
        "html",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
        "caption",
    ]
)
_CELL_TAGS = frozenset({"td", "th"})
_MARKUP_RE = re.compile(r"<[a-zA-Z/!?]|&(?:#\d+|#[xX][0-9a-fA-F]+|[a-zA-Z][a-zA-Z0-9]*);")

_HTML_PARSER = lxml.html.HTMLParser(
    encoding="utf-8",  # we always hand it UTF-8 bytes; ignores <meta charset>
    remove_comments=True,
    remove_pis=True,
    no_network=True,
    recover=True,
    default_doctype=False,
)


def looks_like_html(text: str) -> bool:
    """True when ``text`` contains a tag or an entity reference."""
    return _MARKUP_RE.search(text) is not None


def _tidy_lines(text: str) -> str:
    # Per line: runs of whitespace to one space, ends stripped (``_INLINE_WS_RE``
    # and strip, done by str.split); empty lines dropped.
    return _tidy(text, refuse=False) or ""  # (never None without ``refuse``)


def _tidy(text: str, refuse: bool) -> str | None:
    """``_tidy_lines(text)``; with ``refuse``, None instead when ``text`` holds a
    character lxml refuses to set (``_XML_REFUSED_BYTES``).

    A line already tidy (most lines of converted HTML) is kept as it is, found in C: a
    line passing ``str.isprintable`` has no whitespace but " " (every other whitespace
    character is a control or separator), so it is tidy when no space doubles and none
    is at an end.
    """
    if refuse:
        # (the ASCII controls are single bytes in UTF-8, never part of a longer sequence)
        data = text.encode("utf-8", "surrogatepass")
        if len(data.translate(None, _XML_REFUSED_BYTES)) != len(data):
            return None
    out = []
    for line in text.split("\n"):
        if not line.isprintable() or "  " in line or line[:1] == " " or line[-1:] == " ":
            line = " ".join(line.split())
        if line:
            out.append(line)
    return "\n".join(out)


_WALK_EVENTS = ("start", "end", "comment", "pi")


def _structured_text(root: lxml.html.HtmlElement) -> str:
    """What ``_rewritten_text`` returns (before ``_tidy_lines``), in one read-only walk.

    The same pieces in the same order, without writing to the tree: a block element
    or ``<br>`` puts a newline where the rewrite adds one, a cell a space, an image its
    ``alt``. Outside ``<pre>`` a text's line breaks are only turned into spaces (not
    squashed: ``_tidy_lines`` squashes every line afterwards, so the lines and words are
    the same); inside ``<pre>`` (its text, its descendants' texts and tails) they are
    kept. Carriage returns that are kept become newlines, as the rewrite's final
    ``replace`` does.
    """
    parts: list[str] = []
    append = parts.append
    block, cells = _BLOCK_TAGS, _CELL_TAGS
    pre = 0  # depth of <pre> elements around (and including) the current one
    for event, element in lxml.etree.iterwalk(root, events=_WALK_EVENTS):
        tag = element.tag
        if event == "start":
            if tag == "pre":
                pre += 1
            if tag.lower() in block:
                append("\n")
            text = element.text
            if text:
                if pre:
                    append(text.replace("\r", "\n"))
                else:
                    append(text.replace("\n", " ").replace("\r", " "))
            continue
        if event == "end":
            if tag == "pre":
                pre -= 1
            if element is root:  # text_content() has no tail of the root
                break
            lower = tag.lower()
            if lower == "br" or lower in block:
                append("\n")
            elif lower in cells:
                append(" ")
            elif lower == "img":
                alt = element.get("alt")
                if alt:
                    append(" " + alt.replace("\r", "\n") + " ")
        # (a comment or processing instruction: its text is not text content, its tail is)
        tail = element.tail
        if tail:
            # a <pre>'s own tail is squashed like any text outside <pre>
            if pre and tag != "pre":
                append(tail.replace("\r", "\n"))
            else:
                append(tail.replace("\n", " ").replace("\r", " "))
    return "".join(parts)


def _rewritten_text(root: lxml.html.HtmlElement) -> str:
    """The text of ``root`` by rewriting the tree (the definition ``_structured_text``
    follows): whitespace squashed outside ``<pre>``, newlines and spaces added around
    the elements, then ``text_content()``. Used for the rare tree whose texts lxml
    refuses to set (it raises ValueError, as it always did)."""
    # Source line breaks are spaces in HTML (except in <pre>); the structure
    # alone decides where lines break.
    # (A set of the elements themselves: it keeps lxml's proxies alive, so
    # identity holds; ids of transient proxies would be reused.)
    preformatted = {inner for pre in root.iter("pre") for inner in pre.iter()}
    for element in root.iter():
        if element.text and element not in preformatted:
            element.text = _squash_ws(element.text)
        if element.tail and (element not in preformatted or element.tag == "pre"):
            element.tail = _squash_ws(element.tail)
    for element in root.iter():
        tag = element.tag
        if not isinstance(tag, str):  # comments, PIs, entities left by recovery
            continue
        tag = tag.lower()
        if tag == "br":
            element.tail = "\n" + (element.tail or "")
        elif tag in _BLOCK_TAGS:
            element.text = "\n" + (element.text or "")
            element.tail = "\n" + (element.tail or "")
        elif tag in _CELL_TAGS:
            element.tail = " " + (element.tail or "")
        elif tag == "img" and element.get("alt"):
            # keep an image's alternative text where the image was
            element.tail = " " + element.get("alt", "") + " " + (element.tail or "")
    text: str = root.text_content()
    return text.replace("\r", "\n").replace("\xa0", " ")


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment or document.

    Entities are decoded, comments, scripts, styles and other non-text elements
    are dropped, block elements and ``<br>`` start new lines, table cells are
    separated by spaces. Runs of spaces collapse to one; lines are stripped and
    empty lines removed, so paragraphs are separated by a single ``"\\n"``.
    Never raises: unparseable input gives its tag-less best effort or ``""``.
    (One exception, as it has always been: a reference to a control character
    lxml refuses, such as ``&#1;``, raises lxml's ValueError in most places.)
    """
    if not html:
        return ""
    html = strip_controls(html)
    if "<" not in html and "&" not in html:
        return _tidy_lines(html.replace("\r", "\n"))
    try:
        root = lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=_HTML_PARSER)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError):
        return _tidy_lines(re.sub(r"<[^>]*>", " ", html).replace("\r", "\n"))
    for element in list(root.iter(*_DROP_TAGS)):
        element.drop_tree()
    tidy = None if root.tail else _tidy(_structured_text(root), refuse=True)
    if tidy is None:
        # a text lxml would refuse to set (from a reference such as &#1;): the rewrite,
        # whose ValueError the callers have always seen (parse drops such an entry)
        tidy = _tidy_lines(_rewritten_text(root))
    return tidy


# --------------------------------------------------------------------------- sanitising

#: Tags kept by ``sanitize_html``; anything else is unwrapped (its text kept)
#: unless it is in ``_REMOVE_WITH_CONTENT``. No tables (layout junk in feeds),
#: no h1 (the page owns the top heading), no forms, no embedded content.
ALLOWED_TAGS: frozenset[str] = frozenset(
    [
        "p",
        "br",
        "hr",
        "a",
        "em",
        "strong",
        "b",
        "i",
        "u",
        "s",
        "sub",
        "sup",
        "small",
        "mark",
        "q",
        "cite",
        "abbr",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "blockquote",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "code",
        "figure",
        "figcaption",
        "img",
    ]
)
#: Attributes kept per tag. ``rel`` is set by the sanitiser, never copied.
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "abbr": {"title"},
    "q": {"cite"},
    "blockquote": {"cite"},
}
#: URL schemes allowed in href/src/cite; relative URLs are resolved or dropped.
URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
_REMOVE_WITH_CONTENT = frozenset(
    [
        "script",
        "style",
        "template",
        "noscript",
        "svg",
        "math",
        "iframe",
        "frame",
        "frameset",
        "object",
        "embed",
        "applet",
        "form",
        "textarea",
        "select",
        "button",
        "canvas",
        "audio",
        "video",
        "source",
        "track",
        "head",
        "title",
    ]
)
_LINK_REL = "nofollow noopener noreferrer"
_SCHEME_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*):")


def _attribute_filter(tag: str, attribute: str, value: str) -> str | None:
    # Images must come over http(s): no mailto:, no data: (nh3 already refuses
    # schemes outside URL_SCHEMES). Must never raise (nh3 reports to unraisablehook).
    if tag == "img" and attribute == "src":
        scheme = _SCHEME_RE.match(value.strip())
        if scheme and scheme.group(1).lower() not in ("http", "https"):
            return None
    return value


@lru_cache(maxsize=256)
def _cleaner(base_url: str | None) -> nh3.Cleaner:
    if base_url is None:
        return _make_cleaner("deny")
    return _make_cleaner(("rewrite_with_base", base_url))


def _make_cleaner(relative: Literal["deny"] | tuple[Literal["rewrite_with_base"], str]) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(_REMOVE_WITH_CONTENT),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_attribute_filter,
        strip_comments=True,
        link_rel=_LINK_REL,
        url_schemes=set(URL_SCHEMES),
        url_relative=relative,
    )


def _usable_base(base_url: str | None) -> str | None:
    if not base_url:
        return None
    try:
        parts = urlsplit(base_url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return urlunsplit(parts)


def sanitize_html(html: str, base_url: str | None = None) -> str:
    """Untrusted HTML reduced to a safe subset (an allow-list, via nh3/ammonia).

    Kept: ``ALLOWED_TAGS`` with ``ALLOWED_ATTRIBUTES``; links get
    ``rel="nofollow noopener noreferrer"``; images must be http(s) (no
    attributes are added to them: nh3 adds them in hash order, and the output
    must be deterministic for republishing). URLs must be http,
    https or mailto; relative URLs are resolved against ``base_url`` when it is
    an http(s) URL and dropped otherwise. Removed: every other tag (its text is
    kept), and entirely with their content scripts, styles, svg, math, iframes,
    objects, forms, media. No ``style``, ``class``, ``id`` or event handler
    attributes survive. Comments are stripped. Never raises.
    """
    if not html:
        return ""
    html = strip_controls(html)
    try:
        cleaner = _cleaner(_usable_base(base_url))
    except ValueError:  # a base nh3 refuses: fall back to dropping relative URLs
        cleaner = _cleaner(None)
    return cleaner.clean(html).strip()


# --------------------------------------------------------------------------- URLs

#: Query parameters removed by ``canonical_url`` (compared case-insensitively):
#: analytics and campaign tags that do not select content.
TRACKING_PARAMS: frozenset[str] = frozenset(
    [
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "wbraid",
        "gbraid",
        "li_fat_id",
        "mc_cid",
        "mc_eid",
        "igshid",
        "igsh",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "vero_id",
        "vero_conv",
        "ref",
        "ref_src",
        "ref_url",
        "cmpid",
        "ocid",
        "spm",
        "icid",
        "ito",
        "xtor",
        "smid",
        "wt.mc_id",
        "s_kwcid",
        "ef_id",
        "ns_mchannel",
        "ns_source",
        "ns_campaign",
        "ns_linkname",
        "ns_fee",
        "at_medium",
        "at_campaign",
        "oly_anon_id",
        "oly_enc_id",
        "rb_clickid",
        "__twitter_impression",
    ]
)
#: Query parameter prefixes removed by ``canonical_url``.
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_", "__hs", "hsa_")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_tracking(raw_key: str) -> bool:
    key = unquote_plus(raw_key).strip().lower()
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


def canonical_url(url: str, base: str | None = None) -> str:
    """One canonical spelling of an http(s) URL.

    Resolves against ``base`` when given and ``url`` is relative; lower-cases
    scheme and host, drops a default port, userinfo is kept, drops the
    fragment, removes tracking query parameters (``TRACKING_PARAMS``,
    ``TRACKING_PREFIXES``), sorts the remaining parameters (their spelling is
    kept byte for byte, so no re-encoding changes meaning) and turns an empty
    path into ``/``. Non-http(s) URLs and anything unparseable come back
    stripped and otherwise unchanged. Never raises.
    """
    text = url.strip() if isinstance(url, str) else ""
    try:
        if base:
            text = urljoin(base.strip(), text)
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.netloc:
            return text
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = parts.port
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        netloc = f"{userinfo}@{host}" if userinfo else host
        pairs = [p for p in parts.query.split("&") if p and not _is_tracking(p.split("=", 1)[0])]
        pairs.sort()
        path = parts.path or "/"
        return urlunsplit((scheme, netloc, path, "&".join(pairs), ""))
    except (ValueError, TypeError, UnicodeError):
        return text
