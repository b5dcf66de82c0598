"""Tests of aggregator.text: pure string functions."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.text import (
    canonical_url,
    collapse_ws,
    html_to_text,
    looks_like_html,
    sanitize_html,
    truncate,
)

# --------------------------------------------------------------------------- html_to_text


def test_html_to_text_basics() -> None:
    html = (
        "<h2>Title</h2><p>Tom &amp; Jerry&nbsp;&#8212; <b>bold</b> &eacute;t&eacute;</p>"
        "<script>var x = '<p>hidden</p>';</script><style>p { color: red }</style>"
        "<ul><li>one</li><li>two</li></ul>line<br>break<table><tr><td>a</td><td>b</td></tr></table>"
        '<!-- comment --><img src="x.png" alt="a cat">'
    )
    assert html_to_text(html) == "Title\nTom & Jerry — bold été\none\ntwo\nline\nbreak\na b\na cat"


def test_html_to_text_keeps_preformatted_lines() -> None:
    assert html_to_text("<p>x</p><pre>line 1\nline 2</pre>tail\ntext") == "x\nline 1\nline 2\ntail text"


def test_html_to_text_whitespace_and_plain_input() -> None:
    assert html_to_text("  plain\t\ttext \n\n\n more  ") == "plain text\nmore"
    assert html_to_text("<p>  a \n b  </p>\n\n<p>c</p>") == "a b\nc"
    assert html_to_text("") == ""
    assert html_to_text("   ") == ""
    assert html_to_text("<p></p><br/>") == ""


@pytest.mark.parametrize(
    "garbage",
    [
        "<",
        "<<<>>>",
        "&",
        "&#xZZ;",
        "&#99999999;",
        "\x00\x01\x02<p>\x0b",
        "<p><div></p></div>",
        "<?xml version='1.0' encoding='latin-1'?><p>x</p>",
        "\ud800 lone surrogate",
        "<![CDATA[x]]>",
        "<html><head><title>t</title></head></html>",
        "<!DOCTYPE html>",
    ],
)
def test_html_to_text_survives_garbage(garbage: str) -> None:
    assert isinstance(html_to_text(garbage), str)


def test_html_to_text_huge_input_is_fast() -> None:
    html = "<p>" + "word " * 200_000 + "</p>" + "<div><span>x</span></div>" * 20_000
    started = time.monotonic()
    text = html_to_text(html)
    assert time.monotonic() - started < 3
    assert text.startswith("word word")


def test_html_to_text_deep_nesting() -> None:
    html = "<div>" * 5000 + "deep" + "</div>" * 5000
    assert "deep" in html_to_text(html) or html_to_text(html) == ""


def test_looks_like_html() -> None:
    assert looks_like_html("<b>x</b>") and looks_like_html("a &amp; b") and looks_like_html("&#39;")
    assert not looks_like_html("a < b and c > d") and not looks_like_html("AT&T")


# --------------------------------------------------------------------------- sanitize_html


def test_sanitize_keeps_the_allowed_subset() -> None:
    html = (
        "<p>Hi <em>there</em> <strong>you</strong></p><blockquote>q</blockquote>"
        "<ul><li>1</li></ul><pre><code>x = 1</code></pre><h2>Sub</h2>"
    )
    assert sanitize_html(html) == html


def test_sanitize_links_and_images() -> None:
    out = sanitize_html(
        '<a href="https://x.example/a" title="t" target="_blank">x</a>'
        '<img src="https://x.example/i.png" alt="i" width="9999">'
    )
    assert out == (
        '<a href="https://x.example/a" title="t" rel="nofollow noopener noreferrer">x</a>'
        '<img src="https://x.example/i.png" alt="i">'
    )


def test_sanitize_resolves_relative_urls_against_base() -> None:
    out = sanitize_html(
        '<a href="../b?c=1">b</a><img src="/i.png"><a href="//cdn.example/x">c</a>',
        base_url="https://site.example/a/post",
    )
    assert 'href="https://site.example/b?c=1"' in out
    assert 'src="https://site.example/i.png"' in out
    assert 'href="https://cdn.example/x"' in out


@pytest.mark.parametrize("base", [None, "file:///tmp/feed.xml", "not a url", ""])
def test_sanitize_drops_relative_urls_without_an_http_base(base: str | None) -> None:
    assert sanitize_html('<a href="/x">x</a>', base_url=base) == '<a rel="nofollow noopener noreferrer">x</a>'


@pytest.mark.parametrize(
    "attack",
    [
        "<script>alert(1)</script>",
        '<img src="x" onerror="alert(1)">',
        '<a href="javascript:alert(1)">x</a>',
        '<a href="JaVaScRiPt:alert(1)">x</a>',
        '<a href="jav&#x09;ascript:alert(1)">x</a>',
        '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
        '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
        '<svg onload="alert(1)"><script>alert(1)</script></svg>',
        "<math><mtext><script>alert(1)</script></mtext></math>",
        '<iframe src="javascript:alert(1)"></iframe>',
        '<form action="javascript:alert(1)"><button>go</button></form>',
        '<p style="background:url(javascript:alert(1))">x</p>',
        "<style>@import 'javascript:alert(1)';</style>",
        '<object data="javascript:alert(1)"></object>',
        '<embed src="javascript:alert(1)">',
        '<body onload="alert(1)">',
        '<div onmouseover="alert(1)">x</div>',
        '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
        '<base href="javascript:alert(1)//">',
        "<img src=x:alert(1) onerror=eval(src)>",
        '<a href="vbscript:msgbox(1)">x</a>',
        "<<script>script>alert(1)//<</script>/script>",
        '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
        "<template><script>alert(1)</script></template>",
    ],
)
def test_sanitize_removes_attacks(attack: str) -> None:
    out = sanitize_html(attack).lower()
    for bad in (
        "<script",
        "javascript:",
        "vbscript:",
        "onerror",
        "onload",
        "onmouseover",
        "<svg",
        "<math",
        "<iframe",
        "<form",
        "<object",
        "<embed",
        "<style",
        "style=",
        "<meta",
        "<base",
        "data:",
    ):
        assert bad not in out, (attack, out)


def test_sanitize_is_deterministic() -> None:
    html = '<p><a href="/x" title="t">a</a><img alt="b" src="/i.png" title="c"></p>' * 20
    assert len({sanitize_html(html, base_url="https://x.example/") for _ in range(50)}) == 1


def test_sanitize_removes_comments_and_unknown_tags_but_keeps_text() -> None:
    assert sanitize_html("<div><span class='x'>kept</span></div><!-- gone --><h1>Head</h1>") == "keptHead"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>\"'=/ &;:#abcdefghijklmnopqrstuvwxyzSCRIPT")), max_size=120))
def test_sanitize_output_is_stable_and_script_free(html: str) -> None:
    out = sanitize_html(html, base_url="https://x.example/")
    assert "<script" not in out.lower()
    assert sanitize_html(out, base_url="https://x.example/") == out


# --------------------------------------------------------------------------- small helpers


def test_collapse_ws() -> None:
    assert collapse_ws("  a \n\t b\u00a0 c  ") == "a b c"
    assert collapse_ws("") == ""


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("The quick brown fox jumps over the lazy dog", 20) == "The quick brown fox…"
    assert truncate("Supercalifragilisticexpialidocious", 10) == "Supercali…"
    assert truncate("a, b, c, d, e, f, g", 8) == "a, b…"
    assert truncate("anything", 0) == ""
    assert truncate("  lots   of\n space  ", 100) == "lots of space"


@given(st.text(max_size=300), st.integers(min_value=0, max_value=200))
def test_truncate_never_exceeds_the_limit(text: str, n: int) -> None:
    out = truncate(text, n)
    assert len(out) <= max(n, 0)
    if len(collapse_ws(text)) <= n:
        assert out == collapse_ws(text)


# --------------------------------------------------------------------------- canonical_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM", "http://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a#section", "https://example.com/a"),
        ("https://example.com/a?b=2&a=1&a=0", "https://example.com/a?a=0&a=1&b=2"),
        ("https://example.com/a?utm_source=rss&utm_medium=feed&id=5", "https://example.com/a?id=5"),
        ("https://example.com/a?UTM_Campaign=x&fbclid=1&gclid=2&mc_cid=3&mc_eid=4", "https://example.com/a"),
        (
            "https://example.com/a?igshid=1&ref=rss&ref_src=tw&cmpid=x&ocid=y&_ga=z&yclid=q&spm=1.2",
            "https://example.com/a",
        ),
        ("https://example.com/a?at_medium=RSS&at_campaign=KARANGA&x=1", "https://example.com/a?x=1"),
        ("https://example.com/a?q=a%20b&flag", "https://example.com/a?flag&q=a%20b"),
        ("https://example.com/a?", "https://example.com/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("https://user:pw@Example.com/a", "https://user:pw@example.com/a"),
        ("https://[2001:DB8::1]:443/a", "https://[2001:db8::1]/a"),
        ("https://example.com/Path/Case", "https://example.com/Path/Case"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
        ("tag:example.com,2006:1", "tag:example.com,2006:1"),
        ("not a url", "not a url"),
        ("http://[::1", "http://[::1"),
        ("http://example.com:99999/", "http://example.com:99999/"),
        ("", ""),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_canonical_url_resolves_against_a_base() -> None:
    assert canonical_url("../b?utm_source=x", base="https://example.com/a/c") == "https://example.com/b"
    assert canonical_url("https://other.example/x", base="https://example.com/") == "https://other.example/x"


@given(
    st.text(max_size=100) | st.from_regex(r"https?://[a-zA-Z0-9.:\[\]@-]{0,20}/[ -~]{0,40}", fullmatch=True)
)
def test_canonical_url_never_raises_and_is_idempotent(url: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once


def test_fast_whitespace_and_control_helpers_match_their_regex_definitions() -> None:
    """strip_controls, collapse_ws and the line tidying avoid regexes on long text;
    they must give exactly what the regex formulations give."""
    import random
    import re

    from aggregator import text as text_module

    whitespace = re.compile(r"\s+")
    inline = re.compile(r"[^\S\n]+")
    alphabet = [
        "a", "b", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000",
        "\x00", "\x07", "\x7f", "\ud800", "\udfff", "\ufffe", "\uffff", "é", "\u200b", "\x80", "<", "&",
    ]
    rng = random.Random(5)
    for _ in range(20000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert text_module.strip_controls(s) == text_module._CONTROL_RE.sub("", s), repr(s)
        assert text_module.collapse_ws(s) == whitespace.sub(" ", s).strip(), repr(s)
        assert text_module._squash_ws(s) == whitespace.sub(" ", s), repr(s)
        lines = (inline.sub(" ", line).strip() for line in s.split("\n"))
        assert text_module._tidy_lines(s) == "\n".join(line for line in lines if line), repr(s)
