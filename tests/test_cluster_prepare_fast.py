"""The fast paths of the clusterer's prepare step give exactly what the plain forms give.

features.analyse tokenises most ASCII lines with translate + split instead of the regex,
and semantic._Pieces calls the BPE model directly instead of Tokenizer.encode: both are
checked here against the plain forms on text built to hit their edge cases (apostrophes,
digits, breaks, control characters, non-ASCII, added tokens).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.cluster import features as f
from aggregator.cluster.semantic import _Pieces, embedder
from tests.test_cluster_scores import _analyse_reference

# pieces that meet at every kind of boundary the tokenisers care about
_PIECES = [
    "Putin",
    "said",
    "the",
    "Kremlin",
    "IN",
    "Of",
    "U.S.",
    "o'Brien",
    "don't",
    "'quoted'",
    "rock'n'roll",
    "a''b",
    "x1'Abc",
    "1'Abc",
    "3rd",
    "1990's",
    "1,000",
    "7.0",
    "6.",
    ",5",
    "covid19",
    "_",
    "-",
    "--",
    "é",
    "É",
    "’",
    "…",
    "²",
    "😀",
    "ǅ",
    " ",
    "  ",
    *".:;!?()[]|\"'`,/\t\x01\x02\x7f",  # one character each
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=30), st.lists(st.sampled_from(["", " ", "\n"]), max_size=30)
)
def test_analyse_fast_paths_match_the_word_by_word_rule(pieces: list[str], seps: list[str]) -> None:
    text = "".join(p + (seps[i] if i < len(seps) else "") for i, p in enumerate(pieces))
    assert f.analyse(text) == _analyse_reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aBz'.,:(\"-_ 09\t\x01\x02", max_size=40))
def test_tokenisers_match_the_regexes(line: str) -> None:
    words, starts = f._tokens(line)
    tokens = f._TOKEN.findall(line)
    assert f._words(line) == f._WORD.findall(line) == words == [t for t in tokens if t]
    # the sentence starts: the word after the line start or a break
    expected, k = set(), 0
    for i, t in enumerate(tokens):
        if i == 0 or not tokens[i - 1]:
            expected.add(k)
        k += bool(t)
    assert {s for s in starts if s < len(words)} == {s for s in expected if s < len(words)}


def test_split_form_is_used_for_plain_ascii_only() -> None:
    assert f._split_form("Putin's envoy met Zelenskyy: talks (again).", f._ASCII_TOKENS) is not None
    for line in ("In 2007, 1,200 died", "a''b", "café"):
        assert f._split_form(line, f._ASCII_TOKENS) is None


def test_word_pieces_equal_encode() -> None:
    e = embedder()
    tok = e._tok
    pieces = _Pieces(tok, 1000)
    assert pieces._tokenize is not None  # the wheel's tokenizer takes the direct path
    words = [
        "Fed's",
        "tapering,",
        "officials.",
        "1,000",
        "7.0",
        "U.S.",
        "▁",
        "a▁",
        "▁▁b",
        "<s>",
        "a</s>b",
        "<unk>",
        "<0x41>",
        "😀",
        "é",
        "中文",
        "Zelenskyy’s",
    ]
    words += ["\u200b", "\x00"]
    for w in words:
        assert pieces[w] == tok.encode(w, add_special_tokens=False).ids, w


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=12).filter(lambda w: w.split() == [w]))
def test_word_pieces_equal_encode_on_any_word(word: str) -> None:
    tok = embedder()._tok
    assert _Pieces(tok, 10)[word] == tok.encode(word, add_special_tokens=False).ids
