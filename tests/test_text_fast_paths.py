"""The fast paths of aggregator.text give exactly what their plain forms give.

``html_to_text`` reads the tree in one walk (``_structured_text``) where it used to rewrite
it in several passes; ``_tidy_lines``, ``truncate`` and ``strip_controls`` skip work in the
common case (text already tidy, a long text cut short, no control character). Each is
compared here with its plain form, written out below as it was, on generated input built
to hit the edge cases: control characters, references lxml refuses to set (``&#1;``),
non-ASCII whitespace, ``<pre>`` (nested, with dropped elements and tails), image ``alt``
text, carriage returns, comments, digits and long text to truncate.
"""

from __future__ import annotations

import random
import re

import lxml.etree
import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import text as T

# --------------------------------------------------------------------------- the plain forms


def _plain_strip_controls(text: str) -> str:
    return T._CONTROL_RE.sub("", text)


def _plain_collapse_ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _plain_tidy_lines(text: str) -> str:
    lines = (re.sub(r"[^\S\n]+", " ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _plain_truncate(text: str, n: int, ellipsis: str = "…") -> str:
    text = _plain_collapse_ws(text)
    if n <= 0:
        return ""
    if len(text) <= n:
        return text
    room = max(n - len(ellipsis), 0)
    if room == 0:
        return ellipsis[:n]
    cut = text[: room + 1]
    space = cut.rfind(" ")
    head = cut[:space] if space > room // 2 else text[:room]
    return head.rstrip(" ,;:.-–—") + ellipsis


def _plain_rewrite(root: lxml.html.HtmlElement) -> str:
    """The tree rewritten in place, then its text content (html_to_text's former passes)."""
    preformatted = {inner for pre in root.iter("pre") for inner in pre.iter()}
    for element in root.iter():
        if element.text and element not in preformatted:
            element.text = re.sub(r"\s+", " ", element.text)
        if element.tail and (element not in preformatted or element.tag == "pre"):
            element.tail = re.sub(r"\s+", " ", element.tail)
    for element in root.iter():
        tag = element.tag
        if not isinstance(tag, str):
            continue
        tag = tag.lower()
        if tag == "br":
            element.tail = "\n" + (element.tail or "")
        elif tag in T._BLOCK_TAGS:
            element.text = "\n" + (element.text or "")
            element.tail = "\n" + (element.tail or "")
        elif tag in T._CELL_TAGS:
            element.tail = " " + (element.tail or "")
        elif tag == "img" and element.get("alt"):
            element.tail = " " + element.get("alt", "") + " " + (element.tail or "")
    text: str = root.text_content()
    return text.replace("\r", "\n").replace("\xa0", " ")


def _plain_html_to_text(html: str) -> str:
    if not html:
        return ""
    html = _plain_strip_controls(html)
    if "<" not in html and "&" not in html:
        return _plain_tidy_lines(html.replace("\r", "\n"))
    try:
        root = lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=T._HTML_PARSER)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError):
        return _plain_tidy_lines(re.sub(r"<[^>]*>", " ", html).replace("\r", "\n"))
    for element in list(root.iter(*T._DROP_TAGS)):
        element.drop_tree()
    return _plain_tidy_lines(_plain_rewrite(root))


def _outcome(function, *args):  # type: ignore[no-untyped-def]
    """What a call returns, or the type and message of what it raises."""
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return (type(exc).__name__, str(exc))


# --------------------------------------------------------------------------- generated input

_TAGS = [
    "p", "div", "pre", "PRE", "b", "span", "br", "Br", "img", "td", "th", "tr", "table", "li", "ul",
    "h1", "a", "code", "body", "html", "caption", "script", "style", "svg", "math", "template",
    "head", "iframe", "select", "option", "title", "object",
]  # fmt: skip
_TEXTS = [
    "a", "bc", "Word", "1,000", "7.0", "x y", " ", "  ", "\n", "\r", "\r\n", "\t", "\xa0", "\u3000",
    "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x00", "\x01", "\x7f", "\ud800", "\ufffe",
    "\uffff", "é", "日本", "😀", "&amp;", "&nbsp;", "&#160;", "&#1;", "&#11;", "&#12;", "&#13;",
    "&#10;", "&#x1b;", "&#0;", "&#xD800;", "&#x85;", "&#8232;", "&lt;", "&", "<", ">", "<!-- c -->",
    "<?pi x?>", "<![CDATA[z]]>", "</p>", "<br/>", "</pre>",
]  # fmt: skip


def _html(rng: random.Random, refused: float, depth: int = 0) -> str:
    out = []
    for _ in range(rng.randint(0, 5)):
        if rng.random() < 0.45 or depth > 5:
            text = rng.choice(_TEXTS)
            if "&#" in text and text[2:-1] in ("1", "11", "12", "x1b") and rng.random() > refused:
                text = "&#233;"  # mostly keep the references lxml refuses rare
            out.append(text)
            continue
        tag = rng.choice(_TAGS)
        attrs = ""
        if tag.lower() == "img" or rng.random() < 0.1:
            alt = "".join(
                rng.choice(["a", " ", "\n", "\r", "\t", "é", "&#13;", "&#10;", "&#2;"]) for _ in range(3)
            )
            attrs = f' alt="{alt}"'
        close = "" if rng.random() < 0.15 else f"</{tag}>"
        out.append(f"<{tag}{attrs}>{_html(rng, refused, depth + 1)}{close}")
    return "".join(out)


@pytest.mark.parametrize("seed", range(4))
def test_html_to_text_equals_the_tree_rewrite(seed: int) -> None:
    """Generated hostile HTML: the same text, or the same exception (lxml's ValueError for
    a text it refuses, which parse has always turned into a dropped entry)."""
    rng = random.Random(seed)
    refused = 0
    for _ in range(3000):
        html = _html(rng, refused=0.05 if seed % 2 else 0.5)
        expected = _outcome(_plain_html_to_text, html)
        assert _outcome(T.html_to_text, html) == expected, repr(html)
        refused += isinstance(expected, tuple)
    assert refused > 10  # the refusing path was exercised too


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(_TEXTS + [f"<{t}>" for t in _TAGS] + [f"</{t}>" for t in _TAGS]), max_size=25)
)
def test_html_to_text_equals_the_tree_rewrite_on_any_sequence(pieces: list[str]) -> None:
    html = "".join(pieces)
    assert _outcome(T.html_to_text, html) == _outcome(_plain_html_to_text, html)


def test_structured_text_reads_comments_and_processing_instructions_as_the_rewrite_does() -> None:
    """html_to_text's parser drops comments and PIs; the walk still reads their tails
    (and not their text) where the rewrite's text_content() does."""
    keeping = lxml.html.HTMLParser(remove_comments=False, remove_pis=False, encoding="utf-8")
    rng = random.Random(9)
    comments = 0
    for _ in range(2000):
        html = _html(rng, refused=0.0) + "<p>x<!-- c\nd -->\n y<?php z ?>\n<pre>a<!-- q -->\r\nb</pre></p>"
        html = T.strip_controls(html)
        root = lxml.html.document_fromstring(html.encode("utf-8", "replace"), parser=keeping)
        for element in list(root.iter(*T._DROP_TAGS)):
            element.drop_tree()
        walked = T._tidy_lines(T._structured_text(root))
        expected = _outcome(_plain_rewrite, root)
        if isinstance(expected, str):  # (not a text lxml refuses: html_to_text checks for those)
            assert walked == _plain_tidy_lines(expected), repr(html)
            comments += "<!--" in html
    assert comments > 1000


def test_html_to_text_real_shapes() -> None:
    cases = {
        "<p>a\nb</p><pre>x\r\n  y</pre>\n\n<p>c</p>": "a b\nx\ny\nc",
        "<pre><pre>in</pre><script>s</script>\n\nafter</pre>": "in\nafter",  # a <pre>'s tail squashed
        "<pre>a<b>\n</b>\nb</pre>": "a\nb",
        '<p>x<img alt="one\rtwo">y</p>': "x one\ntwo y",
        "<table><tr><td>a</td><td>b</td></tr></table>": "a b",
    }
    for html, text in cases.items():
        assert T.html_to_text(html) == text == _plain_html_to_text(html)
    with pytest.raises(ValueError):
        T.html_to_text("<p>a &#1; b</p>")  # as it always did (parse drops the entry)
    assert T.html_to_text("<pre><b>&#1;</b></pre>") == "\x01" == _plain_html_to_text("<pre><b>&#1;</b></pre>")


# --------------------------------------------------------------------------- the helpers

_ALPHABET = [
    "a", "bc", "word", "7", "1,000", " ", " ", "  ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f",
    "\x85", "\xa0", "\u2028", "\u3000", "\x00", "\x07", "\x7f", "\ud800", "\udfff", "\ufffe", "\uffff",
    "é", "\u200b", "\x80", ",", ".", "-", "—", "😀", "日",
]  # fmt: skip


def _text(rng: random.Random) -> str:
    size = rng.choice([0, 3, 30, 300, 1500])
    if rng.random() < 0.5:  # mostly plain text: the common case the fast paths are for
        plain = ["a", "bc", "word", "42", " ", "\n"]
        return "".join(
            rng.choice(_ALPHABET) if rng.random() < 0.05 else rng.choice(plain) for _ in range(size)
        )
    return "".join(rng.choice(_ALPHABET) for _ in range(size))


def test_helpers_equal_their_plain_forms() -> None:
    rng = random.Random(11)
    for _ in range(4000):
        text = _text(rng)
        assert T.strip_controls(text) == _plain_strip_controls(text), repr(text)
        assert T._tidy_lines(text) == _plain_tidy_lines(text), repr(text)
        assert T.collapse_ws(text) == _plain_collapse_ws(text), repr(text)
        for n in (0, 1, 2, 3, 80, 120, 300, 500, rng.randint(0, 2000)):
            for ellipsis in ("…", "", "..."):
                assert T.truncate(text, n, ellipsis) == _plain_truncate(text, n, ellipsis), (
                    text,
                    n,
                    ellipsis,
                )


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=400).map("".join), st.integers(-1, 500))
def test_helpers_equal_their_plain_forms_on_any_text(text: str, n: int) -> None:
    assert T.strip_controls(text) == _plain_strip_controls(text)
    assert T._tidy_lines(text) == _plain_tidy_lines(text)
    assert T.truncate(text, n) == _plain_truncate(text, n)


def test_truncate_of_long_text_collapsed_only_in_part() -> None:
    """The prefix collapsed is enough, or the whole text is collapsed."""
    words = " ".join(f"w{i}" for i in range(2000))
    assert T.truncate(words, 50) == _plain_truncate(words, 50)
    spaced = " " * 5000 + "tail words here"  # the prefix collapses to nothing
    assert T.truncate(spaced, 10) == _plain_truncate(spaced, 10) == "tail word…"
    gappy = "a" + " \t\n " * 800 + "b " * 300
    for n in (1, 5, 60, 200, 700):
        assert T.truncate(gappy, n) == _plain_truncate(gappy, n)


def test_tidy_fast_path_keeps_tidy_text_and_fixes_the_rest() -> None:
    assert T._tidy_lines("a b\nc") == "a b\nc"
    assert T._tidy_lines("\n\na  b \n c\n\n") == "a b\nc"
    assert T._tidy_lines("a\tb\x0bc\xa0d\u3000e") == "a b c d e"
    assert T._tidy(" a\x01 ", refuse=True) is None  # a character lxml refuses
    assert T._tidy("é\x01", refuse=True) is None
    assert T._tidy("é\x01", refuse=False) == "é\x01"
    assert T._tidy("a\tb\r", refuse=True) == "a b"
