"""A restart's rebuild of the clustering state over two windows, with the older window's
finished stories restored ``transient`` (IDF counts and fingerprints only) and the
in-process index built in bulk at the end: the same state as restoring every article
in full, and a full restore again whenever the plan does not hold."""

from __future__ import annotations

import gc
import hashlib
import itertools
import random
import time
from datetime import datetime, timedelta

import pytest

from aggregator.cluster import (
    Clusterer,
    ClusterSettings,
    Document,
    RestoreError,
    RestoreItem,
    gc_paused,
    parallel,
)
from aggregator.cluster import clusterer as clusterer_module
from aggregator.cluster.features import extract, extract_terms
from aggregator.ingest import ClusterEngine, _item, cluster_pending
from aggregator.models import ParsedEntry
from aggregator.storage import Storage
from tests.conftest import NOW, SHARED

WINDOW = timedelta(hours=ClusterSettings().window_hours)


def _words(rng: random.Random, count: int) -> list[str]:
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "n", "r", "l", "s", "t"]
    return [
        "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.choice((2, 3))))
        for _ in range(count)
    ]


def _stream(days: int = 8, seed: int = 3) -> list[tuple[str, str, str, datetime | None]]:
    """(key, title, text, published or None) over ``days``, oldest first: short events of
    2-5 reports within a few hours, a few long ones with a report every 12 hours (stories
    that span both windows), and some reports without a date."""
    rng = random.Random(seed)
    common = _words(rng, 60)
    start = NOW - timedelta(days=days)
    items: list[tuple[str, str, str, datetime | None]] = []

    def report(event: int, vocab: list[str], at: datetime, n: int, dated: bool = True) -> None:
        title = " ".join(rng.sample(vocab, 4) + rng.sample(common, 2)).capitalize()
        text = f"{title}. " + " ".join(rng.sample(vocab, 5) + rng.sample(common, 6)) + "."
        items.append((f"e{event}-{n}", title, text, at if dated else None))

    for event in range(70):
        vocab = _words(rng, 8)
        at = start + timedelta(hours=rng.uniform(0, days * 24 - 6))
        for n in range(rng.randint(2, 5)):
            report(event, vocab, at + timedelta(minutes=rng.randint(0, 300)), n, dated=rng.random() > 0.03)
    for event in range(70, 74):
        vocab = _words(rng, 8)
        for n in range(days * 2):
            report(event, vocab, start + timedelta(hours=12 * n + rng.uniform(0, 2)), n)
    items.sort(key=lambda item: item[3] or NOW)
    return items


def _store(storage: Storage, items: list[tuple[str, str, str, datetime | None]]) -> None:
    """Every item saved and clustered as the daemon does, a few hours of the stream at a time."""
    feed = storage.add_feed("https://wire.example/feed.xml", now=NOW - timedelta(days=30), title="Wire")
    engine = ClusterEngine(ClusterSettings())
    for _, batch in itertools.groupby(items, key=lambda item: (item[3] or NOW).timestamp() // (6 * 3600)):
        entries = []
        for key, title, text, published in batch:
            when = published or NOW
            entries.append(
                ParsedEntry(
                    key=key,
                    title=title,
                    link=f"https://wire.example/{key}",
                    summary=text,
                    content_html="",
                    text=text,
                    author=None,
                    published=when,
                    updated=when,
                    content_hash=hashlib.sha256(f"{title}\n{text}".encode()).hexdigest(),
                    dated=published is not None,
                )
            )
        storage.save_entries(feed.id, entries, source="Wire", fetched_at=NOW)
        cluster_pending(storage, engine, now=lambda: NOW)
    engine.close()


def _full(storage: Storage) -> ClusterEngine:
    """The reference: every article of the two windows restored in full."""
    engine = ClusterEngine(ClusterSettings())
    since = storage.latest_published() - 2 * WINDOW  # type: ignore[operator]
    engine._load(storage, since, None, None, None)
    return engine


@pytest.fixture
def stored(storage: Storage) -> Storage:
    _store(storage, _stream())
    return storage


def test_rebuild_restores_finished_stories_transient_and_ends_in_the_full_state(
    stored: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    transient = []
    original = Clusterer._add_transient

    def counting(self: Clusterer, doc: Document, story_id: int, *terms: object) -> None:
        transient.append(doc.id)
        original(self, doc, story_id, *terms)  # type: ignore[arg-type]

    monkeypatch.setattr(Clusterer, "_add_transient", counting)
    engine = ClusterEngine(ClusterSettings())
    restored = engine.rebuild(stored)
    reference = _full(stored)
    assert 50 < len(transient) < restored  # the older window's finished stories, no more
    assert engine.clusterer.snapshot() == reference.clusterer.snapshot()
    # the index built in bulk: the same hits, labelled with the same stories
    ours, theirs = engine.clusterer._index, reference.clusterer._index
    held = list(reference.clusterer._articles.values())
    assert len(ours) == len(theirs) == len(held)
    for article in held:
        assert sorted(ours.query(article.sketch)) == sorted(theirs.query(article.sketch))
        a, b = ours.query_labels(article.sketch, 1), theirs.query_labels(article.sketch, 1)
        assert a is not None and b is not None
        assert sorted(a[0].tolist()) == sorted(b[0].tolist()) and sorted(a[1]) == sorted(b[1])  # type: ignore[type-var]


def test_the_rebuilt_engine_decides_as_the_fully_restored_one(stored: Storage) -> None:
    engine = ClusterEngine(ClusterSettings())
    engine.rebuild(stored)
    reference = _full(stored)
    later = [
        Document(10_000 + n, title, text, published and published + timedelta(days=1))
        for n, (_, title, text, published) in enumerate(_stream(days=2, seed=4))
    ]
    for doc in later:
        a, b = (e.clusterer.prepare(doc) for e in (engine, reference))
        decision = engine.clusterer.decide(a)
        assert decision == reference.clusterer.decide(b)
        sid = decision.story_id if decision.story_id is not None else 100_000 + doc.id
        for e, prepared in ((engine, a), (reference, b)):
            if decision.merge:
                e.clusterer.merge(sid, decision.merge)
            e.clusterer.add(prepared, sid)
    assert engine.clusterer.snapshot() == reference.clusterer.snapshot()


def _planned_items(storage: Storage) -> list[RestoreItem]:
    """What a rebuild restores, in order, as planned (the older window's finished stories transient)."""
    latest = storage.latest_published()
    assert latest is not None
    since = latest - 2 * WINDOW
    newest = storage.latest_published(dated_since=since)
    assert newest is not None
    cutoff = newest - WINDOW - timedelta(seconds=1)
    keep = storage.window_stories(since, cutoff)
    return [_item(row, transient=row.story_id not in keep) for row in storage.clustered_texts(since=since)]


def test_a_restore_shared_with_a_helper_process_ends_in_the_same_state(
    stored: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-article work computed in a spawned helper (and here, where it is quicker
    to), the state changed here in order: the same state, index included."""
    items = _planned_items(stored)
    assert any(it.transient for it in items) and all(it.signature is not None for it in items)
    # one article with a signature of other parameters: its sketch is recomputed (in a helper or here)
    items[-1] = items[-1]._replace(params="affine32:99:128")
    monkeypatch.setattr(clusterer_module, "_RESTORE_CHUNK", 9)  # many chunks from a small stream
    calls, received = [], []
    original, receive = parallel.ordered_map, parallel._Helpers._receive

    def spy(func, chunks, workers):  # type: ignore[no-untyped-def]
        calls.append((len(chunks), workers))
        results = original(func, chunks, workers)
        first = next(results)  # the helper is started, and this process computed the first chunk
        if workers:
            time.sleep(2)  # leave the rest to the helper for a while
        yield first
        yield from results

    def counted(self, *, block):  # type: ignore[no-untyped-def]
        got = receive(self, block=block)
        received.append(got)
        return got

    monkeypatch.setattr(parallel, "ordered_map", spy)
    monkeypatch.setattr(parallel._Helpers, "_receive", counted)
    shared, alone = Clusterer(ClusterSettings()), Clusterer(ClusterSettings())
    paused = []
    with shared.bulk_restore():
        shared.restore_many(
            items, workers=1, min_parallel=10, on_progress=lambda n: paused.append(not gc.isenabled())
        )
    with alone.bulk_restore():
        for it in items:
            alone.restore(it.doc, it.story_id, it.signature, it.params, transient=it.transient)
    assert calls[0] == (-(-len(items) // 9), 1) and calls[1:] == [(1, 0)] * len(items)
    assert received.count(True) > 10  # chunks computed by the helper
    assert shared.snapshot() == alone.snapshot()
    for article in alone._articles.values():
        assert sorted(shared._index.query(article.sketch)) == sorted(alone._index.query(article.sketch))
    # the cyclic collector was off for the large restore only, and is back on after it
    assert paused == [True] * len(items) and gc.isenabled()


def test_the_collector_pause_nests_and_keeps_a_disabled_collector_disabled() -> None:
    assert gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_wrong_plan_falls_back_to_the_full_restore(stored: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """No story kept: the articles of the newer window belong to stories planned transient."""
    monkeypatch.setattr(Storage, "window_stories", lambda self, since, cutoff: set())
    engine = ClusterEngine(ClusterSettings())
    engine.rebuild(stored)
    assert engine.clusterer.snapshot() == _full(stored).clusterer.snapshot()


def test_transient_articles_still_held_at_the_end_are_refused(stored: Storage) -> None:
    """A cutoff too late: articles restored transient would still be in the window."""
    latest = stored.latest_published()
    assert latest is not None
    since = latest - 2 * WINDOW
    cutoff = latest  # every story with an article before the newest one would be "finished"
    keep = stored.window_stories(since, cutoff)
    engine = ClusterEngine(ClusterSettings())
    with pytest.raises(RestoreError, match="still held"):
        engine._load(stored, since, keep, cutoff, None)


def test_window_queries(stored: Storage) -> None:
    latest = stored.latest_published()
    assert latest is not None
    since = latest - 2 * WINDOW
    newest_dated = stored.latest_published(dated_since=since)
    assert newest_dated is not None and newest_dated <= latest
    rows = list(stored.clustered_texts(since=since))
    full = list(stored.clustered_articles(since=since))
    assert [r.id for r in rows] == [a.id for a, _ in full]
    for row, (article, signature) in zip(rows, full, strict=True):
        assert (row.story_id, row.title, row.source, row.url) == (
            article.story_id, article.title, article.source, article.url,
        )
        assert row.text == (article.text or article.summary)
        assert row.published == (article.published if article.dated else None)
        assert (row.params, row.hashvalues) == (
            (signature.params, signature.hashvalues) if signature else (None, None)
        )
    assert any(row.published is None for row in rows)
    cutoff = newest_dated - WINDOW
    keep = stored.window_stories(since, cutoff)
    expected = {r.story_id for r in rows if r.published is None or r.published >= cutoff}
    assert keep == expected
    # after_seq: the rows clustered later than a given one
    middle = rows[len(rows) // 2]
    assert [r.id for r in stored.clustered_texts(after_seq=middle.cluster_seq)] == [
        a.id for a, _ in stored.clustered_articles(after_seq=middle.cluster_seq)
    ]


def test_extract_terms_is_extract_without_the_names() -> None:
    """The same term set and fingerprint as extract, on the stream above and on labelled news."""
    import json

    texts = [(title, text) for _, title, text, _ in _stream()]
    for name in ("ecbplus_dev.jsonl", "uci_dev.jsonl"):  # real text where ../shared is beside the checkout
        path = SHARED / "eval" / name
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines()[:1500]]
            texts += [(r.get("title") or "", r.get("text") or "") for r in records]
    cases = [(t, x) for t, x in texts] + [(t, t) for t, _ in texts] + [("", x) for _, x in texts]
    cases += [(x[:80], x) for _, x in texts] + [("", ""), ("The", "the the. The!"), ("3rd O'Neil", "1,000 3rd''x")]
    for title, text in cases:
        f = extract(title, text)
        assert extract_terms(title, text) == (f.shingles, f.fingerprint), (title, text)
