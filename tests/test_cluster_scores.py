"""Pure parts of clustering: features, scores (property tests) and metrics (hand-computed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.cluster.features import cosine, extract, jaccard, stem, terms_and_names, weighted_overlap
from aggregator.cluster.metrics import adjusted_rand, bcubed, pairwise

words = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
vectors = st.dictionaries(words, st.floats(min_value=0.0, max_value=100.0, allow_nan=False), max_size=12)
term_sets = st.frozensets(words, max_size=12)

# --------------------------------------------------------------------------- features


def test_tokens_possessives_numbers_unicode() -> None:
    terms, names = terms_and_names(
        "Putin\u2019s envoy met Zelenskyy\u2019s aides in Istanbul; 1,000 prisoners and a 7.0 quake."
    )
    assert "putin" in terms and "zelenskyi" in terms and "istanbul" in terms
    assert "1000" in terms and "7" in terms
    assert "the" not in terms and "s" not in terms
    assert {
        "zelenskyi",
        "istanbul",
    } <= names and "putin" not in names  # first word of a sentence is no evidence


def test_lowercase_and_title_case_input_have_no_names() -> None:
    assert terms_and_names("mourinho seek killer instinct basel")[1] == set()
    assert terms_and_names("Fed Official Says Weak Data Caused By Weather")[1] == set()


def test_stemmer_conflates_inflections() -> None:
    assert stem("talks") == stem("talk") == stem("talking")
    assert stem("hired") == stem("hire") == stem("hiring")
    assert stem("earthquakes") == stem("earthquake")
    assert stem("news") == "news" and stem("bus") == "bus"


def test_extract_headline_only_and_repeated_title() -> None:
    a = extract("Fed official says weak data", "Fed official says weak data")
    assert a.body_terms == () and set(a.title_terms) == {"fed", "official", "weak", "data"}
    b = extract("Quake hits Chile", "Quake hits Chile\nA strong quake hit Chile on Monday.")
    assert b.body_terms[:2] == ("strong", "quak")
    assert extract("Quake hits Chile", "x").fingerprint != extract("Quake hits Chile", "y").fingerprint
    assert (
        extract("Quake  hits Chile!", "Body.").fingerprint == extract("quake hits chile", "body").fingerprint
    )


# --------------------------------------------------------------------------- scores


@given(vectors, vectors)
def test_cosine_symmetric_and_bounded(a: dict[str, float], b: dict[str, float]) -> None:
    x, y = cosine(a, b), cosine(b, a)
    assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    assert 0.0 <= x <= 1.0


@given(vectors)
def test_cosine_identical_is_max(a: dict[str, float]) -> None:
    if any(v > 0 for v in a.values()):
        assert cosine(a, a) == pytest.approx(1.0)
    else:
        assert cosine(a, a) == 0.0


@given(term_sets, term_sets)
def test_jaccard_symmetric_and_bounded(a: frozenset[str], b: frozenset[str]) -> None:
    assert jaccard(a, b) == jaccard(b, a)
    assert 0.0 <= jaccard(a, b) <= 1.0
    assert jaccard(a, a) == 1.0


@given(term_sets, term_sets, st.dictionaries(words, st.floats(min_value=0.01, max_value=20.0)))
@settings(max_examples=200)
def test_weighted_overlap_symmetric_and_bounded(
    a: frozenset[str], b: frozenset[str], w: dict[str, float]
) -> None:
    x = weighted_overlap(a, b, w)
    assert x == pytest.approx(weighted_overlap(b, a, w))
    assert 0.0 <= x <= 1.0 + 1e-12
    if a:
        assert weighted_overlap(a, a, w) == pytest.approx(1.0)


@given(st.text(max_size=200), st.text(max_size=400))
@settings(max_examples=200)
def test_extract_never_fails(title: str, text: str) -> None:
    f = extract(title, text)
    assert f.length == len(set(f.title_terms) | set(f.body_terms))


# --------------------------------------------------------------------------- metrics

GOLD = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2}
PRED = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "y"}


def test_bcubed_hand_computed() -> None:
    # precision: a,b: 2/2; c: 1/3; d,e: 2/3 -> (1+1+1/3+2/3+2/3)/5 = 11/15
    # recall: a,b: 2/3; c: 1/3; d,e: 2/2 -> (2/3+2/3+1/3+1+1)/5 = 11/15
    p, r, f = bcubed(PRED, GOLD)
    assert p == pytest.approx(11 / 15) and r == pytest.approx(11 / 15) and f == pytest.approx(11 / 15)
    assert bcubed(GOLD, GOLD) == (1.0, 1.0, 1.0)
    singletons = {k: k for k in GOLD}
    p, r, _ = bcubed(singletons, GOLD)
    assert p == 1.0 and r == pytest.approx((1 / 3 * 3 + 1 / 2 * 2) / 5)


def test_pairwise_hand_computed() -> None:
    # predicted pairs: ab, cd, ce, de (4); gold pairs: ab, ac, bc, de (4); shared: ab, de
    p, r, f = pairwise(PRED, GOLD)
    assert (p, r, f) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    assert pairwise({k: k for k in GOLD}, GOLD)[0] == 1.0


def test_adjusted_rand_hand_computed() -> None:
    # contingency: (x,1)=2, (y,1)=1, (y,2)=2; sum C(n_ij,2)=1+0+1=2; rows: C(2,2)+C(3,2)=4; cols: 3+1=4
    # expected = 4*4/10 = 1.6; max = 4; ARI = (2-1.6)/(4-1.6) = 1/6
    assert adjusted_rand(PRED, GOLD) == pytest.approx(1 / 6)
    assert adjusted_rand(GOLD, GOLD) == 1.0
    assert adjusted_rand({"a": 1}, {"a": 2}) == 1.0


def test_metrics_use_shared_items_only() -> None:
    assert bcubed({**PRED, "zz": "q"}, GOLD) == bcubed(PRED, GOLD)
    assert bcubed({}, GOLD) == (0.0, 0.0, 0.0)


def _analyse_reference(text: str) -> tuple[list[str], list[str], set[str]]:
    """The rule of features.analyse written word by word (the plain, slow form)."""
    from aggregator.cluster import features as f

    text = f.normalise(text)
    all_words: list[str] = []
    terms: list[str] = []
    names: set[str] = set()
    for line in text.split("\n"):
        raw_words = f._WORD.findall(line)
        title_case = not line.islower() and f._is_title_case_line(raw_words)
        prev_end = 0
        for m in f._WORD.finditer(line):
            sentence_start = prev_end == 0 or f._BREAK.search(line, prev_end, m.start()) is not None
            prev_end = m.end()
            w = f._norm_word(m.group())
            all_words.append(w)
            if w in f.STOPWORDS or (len(w) == 1 and not w.isdigit()):
                continue
            t = f.stem(w)
            terms.append(t)
            capitalised = m.group()[0].isupper() and w not in f._NOT_NAMES
            if capitalised and not line.islower() and not title_case and not sentence_start:
                names.add(t)
    return all_words, terms, names


@given(
    st.lists(
        st.sampled_from(
            ["Putin", "said", "the", "Kremlin", ".", ":", "talks", "(", ")", "\n", "3.5", "U.S.",
             "Monday", "IN", "Ukraine's", "don't", "peace", '"', "Ankara", "1,200", "é", "Fed", " "]
        ),
        max_size=40,
    )
)
def test_analyse_matches_the_word_by_word_rule(parts: list[str]) -> None:
    from aggregator.cluster.features import analyse

    text = " ".join(parts)
    assert analyse(text) == _analyse_reference(text)


def test_analyse_matches_the_word_by_word_rule_on_seed_reports() -> None:
    from aggregator.cluster.features import analyse

    seeds = Path(__file__).resolve().parents[2] / "shared" / "seeds"
    if not seeds.is_dir():
        pytest.skip(f"{seeds} not found (../shared is absent)")
    for path in sorted(seeds.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert analyse(text) == _analyse_reference(text)
