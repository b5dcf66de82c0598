"""The in-process candidate index (compact bands) against datasketch's own MinHashLSH."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from aggregator.cluster.sketch import CandidateIndex, Sketch, Sketcher, SketchParams


def _sketches(rng: np.random.Generator, n: int, num_perm: int, alphabet: int, dtype: str) -> list[Sketch]:
    """Random signatures from a small alphabet, so that many bands collide (and some
    keys are equal across bands: a band's key alone must not make a hit)."""
    params = SketchParams(num_perm=num_perm)
    template = Sketcher(params)._template
    out = []
    for _ in range(n):
        values = rng.integers(0, alphabet, size=num_perm).astype(dtype)
        out.append(
            Sketch(
                MinHash(
                    num_perm=num_perm,
                    hashvalues=values,
                    permutations=template.permutations,
                    scheme="affine32",
                )
            )
        )
    return out


@pytest.mark.parametrize(
    ("threshold", "num_perm", "alphabet", "buffer"),
    [(0.1, 128, 3, 16), (0.1, 128, 6, 2048), (0.5, 128, 2, 8), (0.9, 64, 2, 8), (0.3, 256, 2, 32)],
)
@pytest.mark.parametrize("direct", [0, 1 << 30], ids=["fenced-runs", "direct-runs"])
def test_queries_equal_datasketch_with_removals(
    threshold: float, num_perm: int, alphabet: int, buffer: int, direct: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every query gives datasketch's answer, and query_counts the number of bands each
    key really shares, through inserts, re-inserts, removals, flushes and merges; runs
    searched through their fences and directly."""
    from aggregator.cluster import sketch as sketch_module

    monkeypatch.setattr(sketch_module._Run, "direct", direct)
    rng = np.random.default_rng(int(threshold * 100) + num_perm + alphabet)
    pyrng = random.Random(5)
    params = SketchParams(num_perm=num_perm)
    index = CandidateIndex(params, threshold)
    assert index._local is not None
    index._local._buffer, index._local._batch = buffer, 4 * buffer  # many runs, merges and flushes
    reference = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert index.bands == (reference.b, reference.r)
    sketches = _sketches(rng, 600, num_perm, alphabet, "uint32")
    held: dict[int, Sketch] = {}
    for step in range(3000):
        roll = pyrng.random()
        key = pyrng.randrange(1500)
        sketch = sketches[pyrng.randrange(len(sketches))]
        if roll < 0.45:
            if key in held:
                reference.remove(key)
            index.insert(key, sketch)
            reference.insert(key, sketch._m, check_duplication=False)
            held[key] = sketch
        elif roll < 0.75 and held:
            gone = pyrng.choice(sorted(held))
            index.remove(gone)
            reference.remove(gone)
            del held[gone]
        elif roll < 0.8:
            index.remove(-1 - key)  # absent: no error
        else:
            got = index.query(sketch)
            assert len(got) == len(set(got))
            assert set(got) == set(reference.query(sketch._m)), step
            keys, counts = index.query_counts(sketch)
            assert sorted(keys) == sorted(got)
            b, r = index.bands
            for k, n in zip(keys, counts.tolist(), strict=True):
                same = held[k].values[: b * r].reshape(b, r) == sketch.values[: b * r].reshape(b, r)
                assert n == int(same.all(axis=1).sum()), (step, k)
        if step % 500 == 0:
            assert index.keys() == set(held) and len(index) == len(held)
            assert all((k in index) == (k in held) for k in range(0, 1500, 7))
    for sketch in sketches[:100]:
        assert set(index.query(sketch)) == set(reference.query(sketch._m))


def test_bulk_load_equals_inserting_one_by_one() -> None:
    rng = np.random.default_rng(3)
    params = SketchParams()
    sketcher = Sketcher(params)
    sketches = _sketches(rng, 500, 128, 4, "uint32")
    one, bulk = CandidateIndex(params, 0.1), CandidateIndex(params, 0.1)
    for n, sketch in enumerate(sketches):
        one.insert(n, sketch)
    bulk.insert(7, sketches[0])  # replaced by the bulk load
    bulk.insert(10_000, sketches[1])  # kept
    one.insert(10_000, sketches[1])
    items = [(n, sketcher.to_bytes(s)) for n, s in enumerate(sketches[:200])]
    items += [(n, s) for n, s in enumerate(sketches[200:400], 200)]  # sketches
    items += [(n, s._m.hashvalues) for n, s in enumerate(sketches[400:], 400)]  # arrays
    assert bulk.insert_many(items) == 500
    assert bulk.keys() == one.keys() and len(bulk) == 501
    for sketch in sketches[:50]:
        assert set(bulk.query(sketch)) == set(one.query(sketch))
    with pytest.raises(ValueError, match="bytes"):
        bulk.insert_many([(1, b"short")])


def test_real_sketches_and_wide_bands_match_datasketch() -> None:
    """Real MinHashes of word sets; bands wider than 64 bits (hashed, not packed) too."""
    words = [f"w{n}" for n in range(300)]
    pyrng = random.Random(2)
    for scheme, threshold in (("affine32", 0.1), ("affine32", 0.8), ("affine64", 0.5), ("legacy", 0.3)):
        params = SketchParams(scheme=scheme)
        sketcher = Sketcher(params)
        index = CandidateIndex(params, threshold)
        reference = MinHashLSH(threshold=threshold, num_perm=128)
        docs = [sketcher.sketch(pyrng.sample(words[: pyrng.randint(20, 300)], 15)) for _ in range(300)]
        index.insert_many((n, sketcher.to_bytes(d)) for n, d in enumerate(docs[:150]))
        for n, d in enumerate(docs[150:], 150):
            index.insert(n, d)
        for n, d in enumerate(docs):
            reference.insert(n, d._m)
        for n in range(0, 300, 3):
            index.remove(n)
            reference.remove(n)
        for d in docs[::5]:
            assert set(index.query(d)) == set(reference.query(d._m)), (scheme, threshold)


def test_sliding_window_keeps_memory_bounded() -> None:
    """Articles expire oldest first: dead entries are dropped and their slots reused."""
    rng = np.random.default_rng(9)
    params = SketchParams()
    index = CandidateIndex(params, 0.1)
    local = index._local
    assert local is not None
    sketches = _sketches(rng, 50, 128, 2**32 - 1, "uint32")
    window = 1500
    for n in range(12_000):
        if n % 3 == 0:
            index.query(sketches[n % 50])
        index.insert(n, sketches[n % 50])
        if n >= window:
            index.remove(n - window)
    assert len(index) == window
    entries = sum(len(run) for run in local._runs) + len(local._new_slots) * 64
    assert entries <= 2.2 * window * 64
    assert local._slots <= 2.5 * window
    assert set(index.query(sketches[0])) == {n for n in range(12_000 - window, 12_000) if n % 50 == 0}


@pytest.mark.redis
def test_shared_index_keeps_datasketch_layout_in_bulk(index_config: dict[str, object]) -> None:
    """Bulk and single inserts, removals and queries of the shared index (Lua scripts,
    pipelines) agree with the in-process index and with datasketch's own MinHashLSH
    opened on the same basename."""
    params = SketchParams()
    sketcher = Sketcher(params)
    pyrng = random.Random(4)
    words = [f"w{n}" for n in range(200)]
    docs = [sketcher.sketch(pyrng.sample(words, 12)) for _ in range(120)]
    shared = CandidateIndex(params, 0.1, index_config)
    local = CandidateIndex(params, 0.1)
    try:
        assert shared.insert_many((("k", n), sketcher.to_bytes(d)) for n, d in enumerate(docs[:80])) == 80
        for n, d in enumerate(docs[80:], 80):
            shared.insert(("k", n), d)
        shared.insert(("k", 3), docs[3])  # again: replaced, not duplicated
        shared.insert("x" * 300, docs[5])  # a long key (MessagePack str 16 in the query's reply)
        assert "x" * 300 in shared.query(docs[5])
        shared.remove("x" * 300)
        local.insert_many((("k", n), d) for n, d in enumerate(docs))
        shared.remove_many([("k", n) for n in range(0, 120, 4)] + [("absent", 1)])
        shared.remove(("k", 1))
        for key in [("k", n) for n in range(0, 120, 4)] + [("k", 1)]:
            local.remove(key)
        assert shared.keys() == local.keys() and len(shared) == len(local) == 89
        assert ("k", 2) in shared and ("k", 4) not in shared
        for d in docs:  # the bands each key shares: counted by Redis as in process
            keys, counts = shared.query_counts(d)
            local_keys, local_counts = local.query_counts(d)
            assert dict(zip(keys, counts.tolist(), strict=True)) == dict(
                zip(local_keys, local_counts.tolist(), strict=True)
            )
        plain = MinHashLSH(threshold=0.1, num_perm=128, storage_config=index_config)
        try:
            for d in docs:
                assert set(shared.query(d)) == set(local.query(d)) == set(plain.query(d._m))
        finally:
            for table in (plain.keys, *plain.hashtables):
                table._redis.close()  # type: ignore[attr-defined]
                table._redis.connection_pool.disconnect()  # type: ignore[attr-defined]
    finally:
        shared.close()


@pytest.mark.redis
def test_deferred_writes_ride_with_the_next_query(index_config: dict[str, object]) -> None:
    """In a batch() block a shared index's writes wait for the next query (one pipeline)
    or the end of the block; reads see them; an exception drops what is pending."""
    from redis.connection import AbstractConnection

    params = SketchParams()
    sketcher = Sketcher(params)
    docs = [sketcher.sketch([f"w{n}", f"w{n + 1}", "common", "words", "here"]) for n in range(10)]
    index = CandidateIndex(params, 0.1, index_config)
    other = CandidateIndex(params, 0.1, index_config)  # another worker
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent[0] += 1
        return original(self, command, check_health)

    try:
        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
        index.insert(0, docs[0])  # not deferred: at once
        assert 0 in other
        with index.batch():
            sent[0] = 0
            index.insert(1, docs[1])
            index.insert(2, docs[2])
            index.remove(0)
            assert sent[0] == 0 and 1 not in other  # nothing sent yet
            sent[0] = 0
            assert {1, 2} <= set(index.query(docs[1]))
            assert sent[0] == 1  # the writes and the query: one round trip
            assert 0 not in index.query(docs[0])
            index.insert(3, docs[3])
            assert 3 in index and len(index) == 3  # reads flush first
            index.insert(4, docs[4])
        assert other.keys() == {1, 2, 3, 4}  # the end of the block flushed
        with pytest.raises(RuntimeError), index.batch():
            index.insert(5, docs[5])
            raise RuntimeError("the pass failed")
        assert other.keys() == {1, 2, 3, 4}  # dropped with the rolled-back pass
        index._redis.script_flush()  # Redis lost its scripts: a pipeline loads them again
        with index.batch():
            index.insert(6, docs[6])
            assert 6 in index.query(docs[6])
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
        index.close()
        other.close()


@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize("num_perm", [64, 128])
def test_sketches_equal_datasketch_minhash(scheme: str, num_perm: int) -> None:
    """The sketcher's own numpy path gives the very hash values of datasketch's
    MinHash.update_batch with the same hash function, seed and scheme (also for
    the empty set and for non-ASCII terms), and round-trips through bytes."""
    import xxhash

    params = SketchParams(num_perm=num_perm, seed=7, scheme=scheme)
    sketcher = Sketcher(params)
    hashfunc = xxhash.xxh64_intdigest if scheme == "affine64" else xxhash.xxh32_intdigest
    rng = random.Random(3)
    vocab = ["putin", "kremlin", "ukraine", "talks", "7.0", "1000", "zelensky", "münchen", "東京", "naïve"]
    vocab += [f"w{i}" for i in range(300)]
    for size in [0, 1, 2, 5, 40, 300]:
        terms = rng.sample(vocab, size)
        reference = MinHash(num_perm=num_perm, seed=7, hashfunc=hashfunc, scheme=scheme)  # type: ignore[arg-type]
        reference.update_batch([t.encode("utf-8") for t in terms])
        got = sketcher.sketch(terms)
        assert got.values.dtype == reference.hashvalues.dtype
        assert np.array_equal(got.values, reference.hashvalues), (scheme, size)
        assert got._m.jaccard(reference) == 1.0
        back = sketcher.from_bytes(sketcher.to_bytes(got))
        assert back is not None and np.array_equal(back.values, got.values)


def test_labels_follow_inserts_relabels_and_removals() -> None:
    """query_labels gives one label per key of query_counts, and the keys sharing enough bands."""
    rng = np.random.default_rng(4)
    params = SketchParams()
    index = CandidateIndex(params, 0.1)
    assert index._local is not None
    index._local._buffer = 16  # runs, merges and the newest articles' dicts
    sketches = _sketches(rng, 40, 128, 3, "uint32")
    labels: dict[int, int] = {}
    pyrng = random.Random(4)
    for step in range(1500):
        key = pyrng.randrange(300)
        roll = pyrng.random()
        if roll < 0.4:
            labels[key] = pyrng.randrange(-5, 10**12)
            index.insert(key, sketches[key % 40], labels[key])
        elif roll < 0.55:
            index.relabel(key, 7)
            if key in labels:
                labels[key] = 7
        elif roll < 0.7:
            index.remove(key)
            labels.pop(key, None)
        else:
            sketch = sketches[pyrng.randrange(40)]
            keys, counts = index.query_counts(sketch)
            got = index.query_labels(sketch, 20)
            assert got is not None
            assert got[0].tolist() == [labels[k] for k in keys], step
            assert got[1] == [k for k, n in zip(keys, counts.tolist(), strict=True) if n >= 20], step
