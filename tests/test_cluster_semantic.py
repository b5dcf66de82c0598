"""The semantic signal: WordLlama embeddings loaded offline, the pure cosine, and its rules."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregator.cluster import Clusterer, ClusterSettings, Document
from aggregator.cluster.semantic import article_text, centred_cosines, embedder

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)


def test_embedder_loads_from_the_wheel_without_network() -> None:
    """The weights and tokenizer ship inside the wordllama wheel: no hub, no cache dir."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('no network in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from aggregator.cluster.semantic import embedder\n"
        "v = embedder().embed('Magnitude 6.4 earthquake strikes off Taiwan')\n"
        "assert v is not None and abs(float((v * v).sum()) - 1.0) < 1e-5\n"
        "import sys; assert 'wordllama.wordllama' not in sys.modules  # not its loader (it would fetch)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME="/nonexistent")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_embeddings_are_unit_deterministic_and_mean_something() -> None:
    e = embedder()
    assert e.embed("") is None and e.embed("   ") is None
    a = e.embed("Fed official hints at faster tapering of stimulus")
    b = e.embed("Plosser sees high bar for change in pace of taper")
    c = e.embed("Beyonce joins campaign to ban the word bossy")
    assert a is not None and b is not None and c is not None
    assert a.shape == (e.dim,) and abs(float(a @ a) - 1.0) < 1e-5
    again = e.embed("Fed official hints at faster tapering of stimulus")
    assert again is not None and np.array_equal(a, again)
    assert float(a @ b) > float(a @ c) + 0.1  # same event, different words: closer than another topic


def test_word_by_word_tokens_equal_the_whole_text() -> None:
    e = embedder()
    text = "Fed's Charles Plosser sees high bar for change in pace of tapering, officials said."
    assert e.tokens(text) == e._tok.encode(text, add_special_tokens=False).ids


def test_article_text() -> None:
    assert article_text("Title", "Title") == "Title"
    assert article_text("Title", "") == "Title"
    assert article_text("Title", "Title and more") == "Title and more"
    assert article_text("Title", "Body") == "Title\nBody"
    assert article_text("", "Body") == "Body"


_vec = arrays(np.float64, 8, elements=st.floats(-10, 10, allow_nan=False, width=32))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_vec, min_size=1, max_size=5),
    st.lists(st.integers(0, 5), min_size=5, max_size=5),
    _vec,
    st.none() | _vec,
)
def test_centred_cosines_bounded_and_zero_safe(
    rows: list[np.ndarray], counts: list[int], vec: np.ndarray, mean: np.ndarray | None
) -> None:
    out = centred_cosines(np.stack(rows), np.array(counts[: len(rows)]), vec, mean)
    assert out.shape == (len(rows),)
    assert np.all(np.isfinite(out)) and np.all(out >= -1.0) and np.all(out <= 1.0)


@settings(max_examples=100, deadline=None)
@given(_vec, _vec, st.floats(0.1, 10))
def test_centred_cosines_symmetric_and_scale_free(a: np.ndarray, b: np.ndarray, k: float) -> None:
    ab = centred_cosines(a[None, :], np.array([1]), b, None)[0]
    ba = centred_cosines(b[None, :], np.array([1]), a, None)[0]
    assert abs(ab - ba) < 1e-9
    assert abs(centred_cosines((k * a)[None, :], np.array([1]), b, None)[0] - ab) < 1e-6
    if float(a @ a) > 1e-6:
        assert abs(centred_cosines(a[None, :], np.array([1]), a, None)[0] - 1.0) < 1e-9


def test_centring_removes_what_every_story_shares() -> None:
    common = np.array([1.0, 0.0, 0.0])
    x = np.array([1.0, 1.0, 0.0])  # common + own direction
    y = np.array([1.0, 0.0, 1.0])  # common + another direction
    plain = centred_cosines(y[None, :], np.array([1]), x, None)[0]
    centred = centred_cosines(y[None, :], np.array([1]), x, common)[0]
    assert plain > 0.4 and abs(centred) < 1e-9


def _doc(i: int, title: str, minutes: float = 0.0) -> Document:
    return Document(id=i, title=title, text=title, published=T0 + timedelta(minutes=minutes), source=f"s{i}")


def _run(c: Clusterer, docs: list[Document]) -> dict[int, tuple[int, str]]:
    counter = itertools.count(1000)
    out = {}
    for d in docs:
        decision, sid = c.assign(d, lambda: next(counter))
        out[d.id] = (sid, decision.signal)
    return out


STORY = [
    "Malaysia Airlines flight MH370 missing over South China Sea",
    "Search for missing Malaysia Airlines jet MH370 widens",
    "Missing Malaysia Airlines plane: search area expanded",
    "Malaysia Airlines MH370: families wait for news of missing jet",
]
OTHERS = [
    "Apple unveils new iPad with faster chip",
    "Senate committee debates farm subsidies bill",
    "Lakers beat Celtics in overtime thriller",
    "Wheat prices climb on drought fears in Kansas",
]


def test_headline_sharing_no_word_joins_on_meaning_with_the_semantic_signal() -> None:
    docs = [_doc(i, t, i) for i, t in enumerate(STORY + OTHERS)]
    docs.append(_doc(99, "Malaysian passenger airliner disappears", 20))
    lexical = _run(Clusterer(ClusterSettings(semantic=False)), docs)
    assert lexical[99][1] == "new"  # no shared word: the words alone cannot place it
    result = _run(Clusterer(), docs)
    assert result[99] == (result[0][0], "semantic")
    assert {result[i][0] for i in range(len(STORY))} == {result[0][0]}
    assert len({result[i][0] for i in range(len(STORY), len(STORY) + len(OTHERS))}) == len(OTHERS)


def test_semantic_off_loads_nothing_and_decides_as_before() -> None:
    c = Clusterer(ClusterSettings(semantic=False))
    p = c.prepare(_doc(1, STORY[0]))
    assert p.emb is None
    c.add(p, 1)
    assert c.snapshot()["semantic"] == (None, 0, [1])


def test_restore_rebuilds_the_semantic_state() -> None:
    docs = [_doc(i, t, i) for i, t in enumerate(STORY + OTHERS)]
    docs.append(_doc(99, "Malaysian passenger airliner disappears", 20))
    live = Clusterer()
    stories = {d.id: sid for d, (sid, _) in zip(docs, _run(live, docs).values(), strict=True)}
    again = Clusterer()
    for d in docs:
        again.restore(d, stories[d.id])
    assert again.snapshot() == live.snapshot()
