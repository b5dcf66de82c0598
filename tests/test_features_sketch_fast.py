"""The fast paths of the clusterer's features and sketches give exactly the plain results.

* ``features._split_form`` now tokenises ASCII lines with digits too, unless a number is
  written where the regex reads it otherwise than ``split`` (``1,000``, ``7.0``, ``3rd``,
  ``90's``): the words and the sentence starts must be the regexes'.
* ``features.sketch_terms`` is ``Features.shingles``: the same set as the distinct terms in
  order, and the MinHash of a set does not depend on the order.
* ``sketch.Sketcher`` keeps the pre-mixed hash of each term it has seen (bounded): the
  signature must be bit for bit the one computed from scratch, and datasketch's own.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import xxhash
from datasketch import MinHash
from datasketch.minhash import _fmix
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.cluster import features as f
from aggregator.cluster.sketch import Sketcher, SketchParams, _MixedHashes
from tests.test_cluster_scores import _analyse_reference

# --------------------------------------------------------------------------- tokenising lines with digits

_LINE_PIECES = [
    "2007", "5329", "7", "0", "1,000", "1,2,3", "7.0", "3.", ".5", ",5", "6,", "3rd", "10am", "1990's",
    "'90s", "90'", "x1", "G7s", "covid19", "mp3s", "a1b", "x1'Abc", "1'Abc", "rock'90", "rock'90s",
    "a1.5", "a1,000", "$5m", "5%", "1/2", "_5a", "Putin", "said", "the", "IN", "U.S.", "don't", "'q'",
    "a''b", " ", "  ", ".", ",", ":", ";", "!", "?", "(", ")", "[", "]", '"', "|", "'", "-", "_", "/",
    "\t", "\x01", "\x02", "\x7f",
]  # fmt: skip


def _regex_tokens(line: str) -> tuple[list[str], set[int]]:
    """The words and sentence starts by the regexes alone (the plain form of _tokens)."""
    tokens = f._TOKEN.findall(line)
    words = [t for t in tokens if t]
    starts, k = set(), 0
    for i, t in enumerate(tokens):
        if i == 0 or not tokens[i - 1]:
            starts.add(k)
        k += bool(t)
    return words, {s for s in starts if s < len(words)}


def _check_line(line: str) -> bool:
    """Asserts _words and _tokens give the regexes' answer; True if the split path was taken."""
    words, starts = f._tokens(line)
    expected_words, expected_starts = _regex_tokens(line)
    assert f._words(line) == f._WORD.findall(line) == expected_words, repr(line)
    assert words == expected_words, repr(line)
    assert {s for s in starts if s < len(words)} == expected_starts, repr(line)
    return f._split_form(line, f._ASCII_TOKENS) is not None


def test_split_form_with_digits_matches_the_regexes() -> None:
    rng = random.Random(3)
    fast = slow = 0
    for _ in range(20000):
        pieces = [rng.choice(_LINE_PIECES) for _ in range(rng.randint(0, 12))]
        line = "".join(p + rng.choice(["", " ", " ", ", ", ". "]) for p in pieces)
        if any(c.isdigit() for c in line):
            if _check_line(line):
                fast += 1
            else:
                slow += 1
    assert fast > 1000 and slow > 1000  # both paths were compared


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="aBz09'.,:;(\"-_ \t\x01\x02", max_size=40))
def test_split_form_with_digits_matches_the_regexes_on_any_line(line: str) -> None:
    _check_line(line)


def test_split_form_takes_lines_with_plain_numbers() -> None:
    for line in ("In 2007 the toll rose to 1200.", "Covid19 cases: 5329 (up 7%)", "rock'90 x1 covid19 5"):
        assert f._split_form(line, f._ASCII_TOKENS) is not None, line
        assert f._split_form(line, f._ASCII_WORDS) is not None, line
        _check_line(line)
    for line in ("In 2007, 1,200 died", "7.0 quake", "the 3rd day", "1990's", "90'x", "café 7"):
        assert f._split_form(line, f._ASCII_TOKENS) is None, line
        _check_line(line)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_LINE_PIECES), max_size=30),
    st.lists(st.sampled_from(["", " ", "\n"]), max_size=30),
)
def test_analyse_with_digits_matches_the_word_by_word_rule(pieces: list[str], seps: list[str]) -> None:
    text = "".join(p + (seps[i] if i < len(seps) else "") for i, p in enumerate(pieces))
    assert f.analyse(text) == _analyse_reference(text)


# --------------------------------------------------------------------------- sketch terms and the sketcher

_WORDS = [
    "putin", "kremlin", "talk", "2007", "1000", "7.0", "é", "ǅ", "日本", "😀", "o'brien", "x" * 40,
    *(f"w{i}" for i in range(300)),
]  # fmt: skip


def _scratch(params: SketchParams, terms: list[str]) -> np.ndarray:
    """The signature computed from scratch, as Sketcher did before it kept hashes."""
    sketcher = Sketcher(params)
    t = sketcher._template
    if params.scheme == "legacy":
        m = t.copy()
        m.update_batch([w.encode("utf-8") for w in terms])
        return m.hashvalues
    h = xxhash.xxh64_intdigest if params.scheme == "affine64" else xxhash.xxh32_intdigest
    hv = np.array([h(w.encode("utf-8")) for w in terms], dtype=t.hashvalues.dtype)
    if not len(hv):
        return t.hashvalues.copy()
    hv = _fmix(hv.reshape(-1, 1), 64 if params.scheme == "affine64" else 32)
    return np.minimum(t.hashvalues, (hv * t.permutations[0] + t.permutations[1]).min(axis=0))


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
def test_cached_hashes_give_the_same_signatures(scheme: str) -> None:
    params = SketchParams(scheme=scheme, num_perm=64)
    sketcher = Sketcher(params)
    rng = random.Random(5)
    for round_ in range(300):
        terms = [rng.choice(_WORDS) for _ in range(rng.randint(0, 40))]  # repeats, and terms seen before
        shape = (list, tuple, set, frozenset, iter)[round_ % 5]
        values = sketcher.sketch(shape(terms)).values
        expected = _scratch(params, terms)
        assert values.dtype == expected.dtype
        assert (
            sketcher.to_bytes(sketcher.sketch(terms)) == np.asarray(expected, dtype=sketcher._dtype).tobytes()
        )
        assert np.array_equal(values, expected)
        # and datasketch's own MinHash of the same terms
        m = MinHash(
            num_perm=64,
            seed=params.seed,
            hashfunc=xxhash.xxh64_intdigest if scheme == "affine64" else xxhash.xxh32_intdigest,
            scheme=scheme,  # type: ignore[arg-type]
        )
        m.update_batch([w.encode("utf-8") for w in terms])
        assert np.array_equal(values, m.hashvalues)


def test_mixed_hashes_stay_bounded_and_exact() -> None:
    mixed = _MixedHashes(xxhash.xxh32_intdigest, 32, np.dtype(np.uint32), size=50)
    rng = random.Random(8)
    for _ in range(500):
        terms = frozenset(rng.sample(_WORDS, rng.randint(1, 30)))
        got = mixed.array(terms)
        raw = np.array([xxhash.xxh32_intdigest(w.encode("utf-8")) for w in terms], dtype=np.uint32)
        assert np.array_equal(got, _fmix(raw, 32))
        assert len(mixed) <= 50
    big = frozenset(_WORDS[:120])  # more terms than the bound at once: still exact
    raw = np.array([xxhash.xxh32_intdigest(w.encode("utf-8")) for w in big], dtype=np.uint32)
    assert np.array_equal(mixed.array(big), _fmix(raw, 32))


def test_sketcher_cache_is_bounded() -> None:
    sketcher = Sketcher(SketchParams())
    sketcher._mixed._size = 1000
    for start in range(0, 20000, 100):
        sketcher.sketch([f"t{i}" for i in range(start, start + 100)])
        assert len(sketcher._mixed) <= 1000


def test_sketch_terms_are_the_distinct_terms() -> None:
    rng = random.Random(4)
    sketcher = Sketcher(SketchParams())
    for _ in range(300):
        title = " ".join(
            rng.choice(_LINE_PIECES + ["Putin", "Kremlin", "talks"]) for _ in range(rng.randint(0, 8))
        )
        body = title + " " + " ".join(rng.choice(_WORDS + _LINE_PIECES) for _ in range(rng.randint(0, 60)))
        feats = f.extract(title, body)
        ordered = list(dict.fromkeys(feats.title_terms + feats.body_terms))  # what sketch_terms returned
        terms = f.sketch_terms(feats)
        assert set(terms) == set(ordered) and len(terms) == len(ordered)
        assert sketcher.to_bytes(sketcher.sketch(terms)) == sketcher.to_bytes(sketcher.sketch(ordered))
        assert np.array_equal(sketcher.sketch(terms).values, _scratch(SketchParams(), ordered))
