"""MinHash sketches and the LSH candidate index: the only module that imports datasketch.

Its job is to *propose* candidates cheaply, never to decide (lemon24/reader's dedupe
plugin makes the same split): an article's sketch is looked up in a banded LSH index
and the keys of the articles sharing a band come back. The cost of a query depends on
the number of bands and on how many articles collide, not on the number of stories
held. The bands are datasketch's (``MinHashLSH``'s choice of bands and rows for the
threshold, its ranges of hash values), and so are the answers: the in-process index
returns exactly the keys datasketch's in-memory ``MinHashLSH`` would (``tests/test_index.py``
compares them).

datasketch 2.0 pitfalls handled here
------------------------------------
* A MinHash has a permutation ``scheme`` (``"affine32"`` by default in 2.0). Sketches of
  different scheme, seed or ``num_perm`` are not comparable, so the three are pinned by
  :class:`SketchParams` and written next to every stored signature
  (:meth:`SketchParams.tag`, e.g. ``"affine32:1:128"``). A stored signature whose tag
  differs is ignored and recomputed.
* ``MinHashLSH`` fixes its bands at construction (from ``threshold`` and ``num_perm``);
  changing the threshold means rebuilding the index (the clusterer is rebuilt from the
  stored articles on start, so this is free).
* Hashing uses 32-bit xxhash (``affine32`` needs 32-bit input; 64-bit for ``affine64``)
  on a single template MinHash that is copied per article: permutations are drawn
  once, and hashing is far cheaper than the default SHA-1.

The storage is chosen by a plain dict, as in datasketch itself: ``None`` or
``{"type": "dict"}`` keeps the index in this process; ``{"type": "redis", "redis":
{...}, "basename": b"..."}`` shares it between workers.

The in-process index
--------------------
datasketch's in-memory ``MinHashLSH`` keeps a ``bytes`` band hash, a dict entry and a set
per band per article (~20 KB an article at 64 bands) and can only be rebuilt one insert
at a time. :class:`_BandIndex` holds the same bands compactly:

* **A band is one uint64.** With the default 64 bands of 2 32-bit values, a band's key is
  its two values side by side (exact: no hashing, no false collision); a band wider than
  64 bits is hashed to 64 bits (a false collision has probability ~2^-64).
* **Sorted runs, LSM-style.** Entries are (band key, slot * bands + band) pairs in a few
  numpy arrays sorted by key: 12 bytes an entry (uint64 + uint32), 768 bytes an article at
  64 bands (~0.9 KB with the slot tables and fences, measured by ``benchmarks/scale.py``).
  A query looks its 64 keys up in each run (a small cache-resident fence of every 32nd
  key, then one block) and drops an entry whose key matches in another band. The newest
  articles are held in a list and, once queries come, a dict keyed by ``band key * bands
  + band``, until ``buffer`` (2,048) of them make a run; a run is merged into the one
  before while it is at least a quarter of its size (a linear merge: each entry is
  re-sorted O(log n) times in all).
* **Slots.** A key gets a small integer slot (dict key -> slot, array slot -> key). Removing
  a key only marks its slot dead: answers skip it at once, its entries are dropped at the
  next merge of its run (or a compaction, when more entries are dead than alive) and only
  then is the slot reused.
* **Labels.** A key carries an int64 label of its owner's (the clusterer's: the article's
  story, changed on merges with :meth:`CandidateIndex.relabel`).
  :meth:`CandidateIndex.query_labels` returns the hits' labels as one array, so hits can be
  counted per story without a Python object per hit (hundreds to thousands of hits a query
  in a window of 20k-100k articles).
* **Bulk load.** :meth:`CandidateIndex.insert_many` takes ``(key, stored signature)``
  pairs and makes one run with one sort (a restart: ~2 s of CPU for 107k articles,
  ``benchmarks/scale.py``). Inserts with no query in between (``Clusterer.restore``, one
  article at a time) are only listed, 65,536 to a run, so a rebuild through the
  clusterer is bulk too.

The shared (Redis) index
------------------------
The index is datasketch's own ``MinHashLSH`` over its own Redis storage: the same keys
(``<basename>_keys``, ``<basename>_bucket_<band>``), the same pickled keys, so a plain
``MinHashLSH(storage_config=...)`` opened on the basename sees every entry. Four things
are added on top, all on that layout:

* **Pinned parameters.** ``<basename>_params`` holds the sketch tag, the threshold and the
  bands the index was built with; it is written once (``SET NX``) and an index opened with
  other parameters is refused (:class:`IndexMismatchError`): signatures of different
  schemes, seeds or sizes, or other bands, would silently never collide.
* **One round trip per operation.** datasketch's Redis storage issues a command per band
  (64 bands: ~130 commands an insert, ~200 a remove); here an insert or remove is one Lua
  script, atomic, with datasketch's layout (the scripts derive the 64 bucket-table names
  from the basename, so a request carries only the key and the band hashes). A query is
  one script too: one ``SUNION`` of the band buckets, whose members come back as a single
  MessagePack string (splitting it costs the client ~1/3 of what parsing a reply of
  thousands of elements with redis-py's parser does). :meth:`CandidateIndex.insert_many`
  and :meth:`CandidateIndex.remove_many` send their scripts in pipelines of 1,000.
* **Write-behind, opt-in.** Inside :meth:`CandidateIndex.batch` inserts and removals wait
  for the next query and go with it in one pipeline (one round trip an article instead of
  two or three); the block must end before the clustering transaction commits.
* **Idempotent writes.** Inserting a key that is already indexed first removes its old band
  entries (a clustering pass that rolled back after writing to Redis leaves nothing stale
  behind when the article is clustered again); removing an absent key does nothing, so
  every worker can prune the same expired article.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import pickle
import struct
import sys
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH
from datasketch.minhash import _fmix  # the pre-mix of the affine schemes (see Sketcher)

_DTYPES = {"affine32": np.dtype("<u4"), "legacy": np.dtype("<u8"), "affine64": np.dtype("<u8")}


@dataclass(frozen=True)
class SketchParams:
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"

    def tag(self) -> str:
        return f"{self.scheme}:{self.seed}:{self.num_perm}"


class Sketch:
    """An opaque MinHash signature of one article: its hash values.

    datasketch's :class:`MinHash` object is made only when asked for (``_m``: tests
    compare with datasketch's own LSH); the clusterer and the indexes use ``values``.
    """

    __slots__ = ("values", "_template")

    def __init__(
        self, m: MinHash | None = None, *, values: np.ndarray | None = None, template: MinHash | None = None
    ) -> None:
        if m is not None:
            values, template = m.hashvalues, m
        if values is None or template is None:
            raise TypeError("Sketch needs a MinHash, or values and a template MinHash")
        self.values = values
        self._template = template

    @property
    def _m(self) -> MinHash:
        t = self._template
        return MinHash(
            num_perm=len(self.values),
            seed=t.seed,
            hashvalues=self.values,
            permutations=t.permutations,
            scheme=t.scheme,
        )

    def jaccard(self, other: Sketch) -> float:
        return float(np.count_nonzero(self.values == other.values)) / len(self.values)


class _MixedHashes:
    """Pre-mixed term hashes: term -> the hash function of its UTF-8 bytes, then
    datasketch's ``_fmix``, the very value ``MinHash.update_batch`` feeds the permutations.

    A pure function of the term, and a news stream repeats its terms: a dict lookup
    replaces the encoding, the hashing and a numpy pass per term. The terms not held yet
    are hashed and mixed in one batch. Bounded: cleared when it would hold more than
    ``size`` terms (results never depend on it).
    """

    __slots__ = ("_hashfunc", "_width", "_dtype", "_size", "_values")

    def __init__(self, hashfunc: Any, width: int, dtype: np.dtype, size: int = 1 << 17) -> None:
        self._hashfunc = hashfunc
        self._width = width
        self._dtype = dtype
        self._size = size
        # a plain dict: set.difference walks only the set against an exact dict
        self._values: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._values)

    def array(self, terms: set[str] | frozenset[str]) -> np.ndarray:
        """The pre-mixed hashes of ``terms`` (in their iteration order)."""
        values = self._values
        new = terms.difference(values)
        if new:
            if len(values) + len(new) > self._size:
                values.clear()
                new = set(terms)
            values.update(zip(new, self._mix(new).tolist(), strict=True))
        try:
            return np.fromiter(map(values.__getitem__, terms), dtype=self._dtype, count=len(terms))
        except KeyError:  # another thread cleared the cache in between: hash them here
            return self._mix(terms)

    def _mix(self, terms: Iterable[str]) -> np.ndarray:
        h = self._hashfunc
        return _fmix(np.array([h(t.encode("utf-8")) for t in terms], dtype=self._dtype), self._width)


class Sketcher:
    """Makes sketches of term sets with pinned parameters.

    For the affine schemes the signature is computed here, in a few numpy operations,
    with datasketch's own permutations and pre-mix (``_fmix``): the very values
    ``MinHash.update_batch`` gives (a test compares them for every scheme), without
    building a MinHash object per article - its constructor re-checks the shared
    permutations every time, which was a third of the sketch's cost.
    """

    def __init__(self, params: SketchParams) -> None:
        self.params = params
        self._hashfunc = xxhash.xxh64_intdigest if params.scheme == "affine64" else xxhash.xxh32_intdigest
        self._template = MinHash(
            num_perm=params.num_perm,
            seed=params.seed,
            hashfunc=self._hashfunc,
            scheme=params.scheme,  # type: ignore[arg-type]
        )
        self._dtype = _DTYPES[params.scheme]
        t = self._template
        self._fast = params.scheme != "legacy"
        self._width = 64 if params.scheme == "affine64" else 32
        self._a = t.permutations[0].reshape(1, -1)
        self._b = t.permutations[1].reshape(1, -1)
        self._empty = t.hashvalues  # the values of an empty set (never written to: sketches get new arrays)
        self._mixed = _MixedHashes(self._hashfunc, self._width, self._empty.dtype)

    def sketch(self, terms: Iterable[str]) -> Sketch:
        if not self._fast:
            m = self._template.copy()
            m.update_batch([t.encode("utf-8") for t in terms])
            return Sketch(m)
        # the minimum over the distinct terms is the minimum over all of them
        distinct = terms if isinstance(terms, (set, frozenset)) else set(terms)
        if not distinct:
            return Sketch(values=self._empty.copy(), template=self._template)
        hv = self._mixed.array(distinct).reshape(-1, 1)
        values = np.minimum(self._empty, (hv * self._a + self._b).min(axis=0))
        return Sketch(values=values, template=self._template)

    def to_bytes(self, sketch: Sketch) -> bytes:
        return np.asarray(sketch.values, dtype=self._dtype).tobytes()

    def fits(self, data: bytes) -> bool:
        """``data`` has the size of a sketch stored with these params."""
        return len(data) == self.params.num_perm * self._dtype.itemsize

    def from_bytes(self, data: bytes) -> Sketch | None:
        """The sketch stored as ``data``, or None when its size does not fit these params."""
        if not self.fits(data):
            return None
        values = np.frombuffer(data, dtype=self._dtype).astype(self._template.hashvalues.dtype)
        return Sketch(values=values, template=self._template)


class IndexMismatchError(ValueError):
    """A shared index was built with other MinHash or LSH parameters than these."""


# --------------------------------------------------------------------------- the in-process index

_VALUE_BITS = {"affine32": 32, "legacy": 32, "affine64": 64}
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wrapping uint64 arithmetic), for bands wider than 64 bits."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _matrix(signatures: Iterable[Any], num_perm: int, dtype: np.dtype) -> np.ndarray:
    """Stored signatures (bytes), arrays of hash values or sketches -> one (n, num_perm) array."""
    size = num_perm * dtype.itemsize
    blobs = []
    for sig in signatures:
        if isinstance(sig, Sketch):
            sig = sig.values
        if isinstance(sig, np.ndarray):
            sig = np.asarray(sig, dtype=dtype).tobytes()
        if len(sig) != size:
            raise ValueError(f"a signature of {len(sig)} bytes, these parameters make {size}")
        blobs.append(sig)
    return np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(blobs), num_perm)


class _Run:
    """Entries sorted by band key: ``keys`` (uint64) and ``vals`` (slot * bands + band).
    Every ``_STEP``-th key is copied to ``fence``: a search looks the fence up (small,
    cache-resident) and then one block of the run, instead of ~20 scattered reads. Both
    arrays end with ``_PAD`` entries of the largest key and slot 0 (never alive), so
    that blocks and windows need no bounds checks."""

    __slots__ = ("keys", "vals", "fence", "n")
    direct = 1 << 18  # runs of up to this many entries are searched without the fence (2 MB of keys)

    def __init__(self, keys: np.ndarray, vals: np.ndarray) -> None:
        self.n = len(keys)
        self.keys = np.concatenate((keys, _PAD_KEYS))
        self.vals = np.concatenate((vals, np.zeros(_PAD, dtype=vals.dtype)))
        self.fence = keys[_STEP::_STEP].copy()

    def __len__(self) -> int:
        return self.n

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        return self.keys[: self.n], self.vals[: self.n]

    def find(self, sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the entries whose key is one of the sorted probes ``sq``, how
        many entries each probe matched)."""
        keys = self.keys
        if self.n <= self.direct:
            # a run this small stays in the CPU's caches: two plain binary searches
            live = keys[: self.n]
            lo = live.searchsorted(sq, "left")
            counts = live.searchsorted(sq, "right") - lo
            total = int(counts.sum())
            if not total:
                return _NONE, counts
            return np.repeat(lo - (counts.cumsum() - counts), counts) + np.arange(total), counts
        # the first key >= q lies in (start, start + _STEP] of the last block starting below q
        start = self.fence.searchsorted(sq, "left") * _STEP
        lo = start + (keys[start[:, None] + _BLOCK] < sq[:, None]).sum(axis=1)
        # equal keys follow lo: look at a few, search again only where they all match
        counts = (keys[lo[:, None] + _WINDOW] == sq[:, None]).sum(axis=1)
        full = counts == len(_WINDOW)
        if full.any():
            counts[full] = keys[: self.n].searchsorted(sq[full], "right") - lo[full]
        total = int(counts.sum())
        if not total:
            return _NONE, counts
        return np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(total), counts


_STEP = 32
_BLOCK = np.arange(_STEP)
_WINDOW = np.arange(4)
_PAD = _STEP + len(_WINDOW)
_PAD_KEYS = np.full(_PAD, np.iinfo(np.uint64).max, dtype=np.uint64)
_NONE = np.zeros(0, dtype=np.int64)
_U4, _U8 = np.dtype("<u4"), np.dtype("<u8")
_TRUE = np.ones(1, dtype=bool)


class _BandIndex:
    """The compact in-process banded index behind :class:`CandidateIndex` (see the
    module docstring, "The in-process index")."""

    def __init__(
        self, bands: int, rows: int, num_perm: int, scheme: str, buffer: int = 2048, batch: int = 65536
    ) -> None:
        self.b, self.r = bands, rows
        self._num_perm = num_perm
        self._nvals = bands * rows
        self._bits = _VALUE_BITS[scheme]
        self._exact = rows * self._bits <= 64
        self._pack2 = rows == 2 and self._bits == 32  # a band is its two values side by side
        self._buffer = buffer  # newest articles held in a dict while queries come
        self._batch = batch  # ... and in a list only, while none does (a restart)
        self._band = np.arange(bands, dtype=np.int64)
        self.clear()

    def clear(self) -> None:
        self._slot_of: dict[Hashable, int] = {}
        self._key_of = np.empty(1024, dtype=object)  # slot -> key (stale for a removed key)
        self._alive = np.zeros(1024, dtype=bool)  # slot -> key not removed
        self._label = np.zeros(1024, dtype=np.int64)  # slot -> the owner's label (see query_labels)
        self._slots = 1  # slots handed out (slot 0: the runs' padding, never alive)
        self._free: list[int] = []  # slots whose entries are all gone
        self._dead = 0  # removed slots whose entries are still stored
        self._runs: list[_Run] = []  # biggest (oldest) first
        self._new_keys: list[np.ndarray] = []  # band keys of the articles not in a run yet
        self._new_slots: list[int] = []
        self._indexed = 0  # how many of those are in _recent
        # one dict per band: band key -> slot, or list of slots (slot 0 is never used, so a
        # slot is never falsy)
        self._recent: list[dict[int, int | list[int]]] = [{} for _ in range(self.b)]
        self._recent_n = 0  # articles in _recent
        self._streaming = False  # queries come: index new articles in _recent at once

    # ------------------------------------------------------------------ band keys

    def band_keys(self, values: np.ndarray) -> np.ndarray:
        """(n, num_perm) hash values -> (n, b) uint64 band keys. Exact (a band's values
        packed side by side) when a band fits in 64 bits, as with the default 64 bands of
        2 32-bit values; otherwise a 64-bit hash of the band's values."""
        n = len(values)
        if self._pack2:
            v = np.ascontiguousarray(values[:, : self._nvals], dtype="<u4")
            return v.view("<u8").reshape(n, self.b).astype(np.uint64, copy=False)
        v = values[:, : self._nvals].astype(np.uint64).reshape(n, self.b, self.r)
        if self._exact:
            keys = v[:, :, 0].copy()
            for j in range(1, self.r):
                keys |= v[:, :, j] << np.uint64(self._bits * j)
            return keys
        keys = np.zeros((n, self.b), dtype=np.uint64)
        for j in range(self.r):
            keys = _mix64((keys ^ v[:, :, j]) * _MIX)
        return keys

    def _one(self, hashvalues: np.ndarray) -> np.ndarray:
        if len(hashvalues) != self._num_perm:
            raise ValueError(f"Expecting minhash with length {self._num_perm}, got {len(hashvalues)}")
        if self._pack2 and hashvalues.dtype == _U4 and hashvalues.flags.c_contiguous:
            # band_keys' packing without its 2-D reshaping: the values' own bytes, as uint64
            return hashvalues[: self._nvals].view(_U8)
        return self.band_keys(hashvalues.reshape(1, -1))[0]

    # ------------------------------------------------------------------ slots

    def _alloc(self, key: Hashable, label: int = 0) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._slots
            self._slots += 1
            if slot >= len(self._alive):
                grow = len(self._alive)
                self._alive = np.concatenate((self._alive, np.zeros(grow, dtype=bool)))
                self._key_of = np.concatenate((self._key_of, np.empty(grow, dtype=object)))
                self._label = np.concatenate((self._label, np.zeros(grow, dtype=np.int64)))
        self._key_of[slot] = key
        self._label[slot] = label
        self._alive[slot] = True
        self._slot_of[key] = slot
        return slot

    def _release(self, slots: np.ndarray) -> None:
        """Slots of removed keys whose entries were just dropped: free for reuse."""
        self._key_of[slots] = None
        self._free.extend(slots.tolist())
        self._dead -= len(slots)

    def _vals(self, vals: np.ndarray) -> np.ndarray:
        return vals.astype(np.uint32) if self._slots * self.b <= 2**32 else vals.astype(np.int64)

    # ------------------------------------------------------------------ operations

    def insert(self, key: Hashable, hashvalues: np.ndarray, label: int = 0) -> None:
        keys = self._one(hashvalues)
        if key in self._slot_of:
            self.remove(key)
        slot = self._alloc(key, label)
        self._new_keys.append(keys)
        self._new_slots.append(slot)
        if len(self._new_slots) >= (self._buffer if self._streaming else self._batch):
            self._flush()
        elif self._streaming and self._indexed == len(self._new_slots) - 1:
            self._index(slot, keys)
            self._indexed += 1

    def insert_many(self, keys: list[Hashable], values: np.ndarray, labels: list[int] | None = None) -> None:
        """Bulk insert: one sort of every band key, one new run (the keys labelled
        ``labels``, one per key, or 0)."""
        if labels is None:
            labels = [0] * len(keys)
        last = {key: i for i, key in enumerate(keys)}  # a key given twice: the last one counts
        if len(last) != len(keys):
            rows = sorted(last.values())
            keys, values, labels = [keys[i] for i in rows], values[rows], [labels[i] for i in rows]
        if not keys:
            return
        band_keys = self.band_keys(values)
        for key in keys:
            self.remove(key)
        self._flush()
        slots = np.fromiter(map(self._alloc, keys, labels), dtype=np.int64, count=len(keys))
        self._add_run(band_keys, slots)

    def relabel(self, key: Hashable, label: int) -> None:
        slot = self._slot_of.get(key)
        if slot is not None:
            self._label[slot] = label

    def remove(self, key: Hashable) -> None:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        self._alive[slot] = False
        self._dead += 1
        if self._dead > max(len(self._slot_of), self._buffer):
            self._compact()

    def query(self, hashvalues: np.ndarray) -> list[Hashable]:
        return self.query_counts(hashvalues)[0]

    def query_counts(self, hashvalues: np.ndarray) -> tuple[list[Hashable], np.ndarray]:
        """The keys sharing a band with ``hashvalues``, and how many bands each shares."""
        slots, counts = self._hits(hashvalues)
        return self._key_of[slots].tolist(), counts

    def query_labels(self, hashvalues: np.ndarray, min_bands: int) -> tuple[np.ndarray, list[Hashable]]:
        """The labels of the keys sharing a band with ``hashvalues`` (one per key), and the
        keys sharing at least ``min_bands`` bands."""
        slots, counts = self._hits(hashvalues)
        return self._label[slots], self._key_of[slots[counts >= min_bands]].tolist()

    def _hits(self, hashvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The slots of the live keys sharing a band with ``hashvalues`` (ascending), and
        how many bands each shares."""
        q = self._one(hashvalues)
        self._streaming = True
        waiting = len(self._new_slots) - self._indexed
        if waiting >= self._buffer:
            self._flush()
        elif waiting:
            for i in range(self._indexed, len(self._new_slots)):
                self._index(self._new_slots[i], self._new_keys[i])
            self._indexed = len(self._new_slots)
        b = self.b
        parts = []
        if self._runs:
            order = q.argsort()
            sq = q[order]  # sorted probes: the searches walk each run in order
            for run in self._runs:
                at, counts = run.find(sq)
                if len(at):
                    v = run.vals[at]
                    parts.append(v[v % b == np.repeat(order, counts)])  # the same band, not only the same key
        if self._recent_n:
            found: list[int] = []
            # every band's dict looked up in C; most bands find nothing
            for slots in filter(None, map(dict.get, self._recent, q.tolist())):
                if type(slots) is list:
                    found += slots
                else:
                    found.append(slots)
            if found:
                parts.append(np.asarray(found, dtype=np.int64) * b)
        if not parts:
            return _NONE, _NONE
        slots = np.concatenate(parts) if len(parts) > 1 else parts[0]
        slots //= b
        slots.sort()  # a slot once per band it shares (an article is in one run or the dict)
        if len(slots) > 1:
            starts = np.concatenate((_TRUE, slots[1:] != slots[:-1])).nonzero()[0]
            counts = np.empty(len(starts), dtype=np.int64)
            np.subtract(starts[1:], starts[:-1], out=counts[:-1])
            counts[-1] = len(slots) - starts[-1]
            slots = slots[starts]
        else:
            counts = np.ones(len(slots), dtype=np.int64)
        alive = self._alive[slots]
        return slots[alive], counts[alive]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slot_of

    def __len__(self) -> int:
        return len(self._slot_of)

    def keys(self) -> set[Hashable]:
        return set(self._slot_of)

    def nbytes(self) -> int:
        """Bytes of the numpy runs and slot arrays (not the Python dicts and lists)."""
        runs = sum(r.keys.nbytes + r.vals.nbytes + r.fence.nbytes for r in self._runs)
        return int(runs + self._alive.nbytes + self._key_of.nbytes + self._label.nbytes)

    def memory_bytes(self) -> int:
        """Bytes held by all of the index's containers: the numpy runs and slot arrays,
        the key <-> slot dict and free list, the newest articles' per-band dicts, the
        band keys not in a run yet. Not the key objects themselves (the caller's)."""
        size = self.nbytes() + sys.getsizeof(self._slot_of) + sys.getsizeof(self._free)
        for recent in self._recent:
            size += sys.getsizeof(recent)
            size += sum(sys.getsizeof(v) for v in recent.values() if type(v) is list)
        size += sum(k.nbytes + 112 for k in self._new_keys) + sys.getsizeof(self._new_keys)
        return int(size)

    # ------------------------------------------------------------------ runs

    def _index(self, slot: int, keys: np.ndarray) -> None:
        """Add the article in ``slot`` to the per-band dicts. Every band's ``setdefault`` runs
        in C; only the bands whose key was already there (``setdefault`` returns what it
        holds, not ``slot``: a new slot is in no dict) are handled one by one."""
        self._recent_n += 1
        recent = self._recent
        ks = keys.tolist()
        held = list(map(dict.setdefault, recent, ks, itertools.repeat(slot)))
        for i in itertools.compress(range(len(held)), map(operator.is_not, held, itertools.repeat(slot))):
            slots = held[i]
            if type(slots) is list:
                slots.append(slot)
            else:
                recent[i][ks[i]] = [slots, slot]

    def _flush(self) -> None:
        if not self._new_slots:
            return
        slots = np.asarray(self._new_slots, dtype=np.int64)
        keys = np.stack(self._new_keys)
        self._new_keys, self._new_slots, self._indexed = [], [], 0
        self._recent, self._recent_n = [{} for _ in range(self.b)], 0
        alive = self._alive[slots]
        if not alive.all():
            self._release(slots[~alive])
            slots, keys = slots[alive], keys[alive]
        if len(slots):
            self._add_run(keys, slots)

    def _add_run(self, keys: np.ndarray, slots: np.ndarray) -> None:
        flat = keys.reshape(-1)
        vals = (slots[:, None] * self.b + self._band).reshape(-1)
        order = np.argsort(flat)
        self._runs.append(_Run(flat[order], self._vals(vals[order])))
        # size-tiered merges: while the newest run is at least a quarter of the one before it
        while len(self._runs) >= 2 and 4 * len(self._runs[-1]) >= len(self._runs[-2]):
            newer, older = self._runs.pop(), self._runs.pop()
            self._runs.append(self._merged([older, newer]))

    def _merged(self, runs: list[_Run]) -> _Run:
        """One run of these runs' live entries; the slots of the dropped ones are freed."""
        keys = np.concatenate([r.live()[0] for r in runs])
        vals = np.concatenate([r.live()[1] for r in runs])
        slots = vals // self.b
        keep = self._alive[slots]
        if not keep.all():
            self._release(np.unique(slots[~keep]))
            keys, vals = keys[keep], vals[keep]
        order = np.argsort(keys, kind="stable")  # timsort: merges the sorted runs
        return _Run(keys[order], self._vals(vals[order]))

    def _compact(self) -> None:
        """Drop every removed entry (more entries are dead than alive)."""
        self._flush()
        if self._runs:
            self._runs = [self._merged(self._runs)]
        if self._runs and not len(self._runs[0]):
            self._runs = []


# --------------------------------------------------------------------------- the shared (Redis) index

# Names: ARGV[2] is the keys-hash name (``<basename>_keys``), ARGV[3] the prefix of the
# bucket tables (``<basename>_bucket_``); band i's table is the prefix and i as two
# big-endian bytes (datasketch's ``struct.pack(">H", i)``), its buckets that name and the
# band hash.
_NAMES = """
local function tname(prefix, i) return prefix .. string.char(math.floor(i / 256), i % 256) end
local function drop(k, rk, prefix)
  local old = redis.call('LRANGE', rk, 0, -1)
  for i, h in ipairs(old) do
    local name = tname(prefix, i - 1)
    local bucket = name .. h
    redis.call('SREM', bucket, k)
    if redis.call('EXISTS', bucket) == 0 then redis.call('HDEL', name, h) end
  end
  return #old
end
"""

# ARGV: pickled key, keys-hash name, bucket-table prefix, then the band hashes (band 0
# first). Removes an earlier entry of the key first.
_INSERT = (
    _NAMES
    + """
local k, kname, prefix = ARGV[1], ARGV[2], ARGV[3]
local rk = kname .. k
drop(k, rk, prefix)
redis.call('DEL', rk)
redis.call('HSET', kname, k, rk)
local hs = {}
for i = 4, #ARGV do
  local name, h = tname(prefix, i - 4), ARGV[i]
  local bucket = name .. h
  redis.call('HSET', name, h, bucket)
  redis.call('SADD', bucket, k)
  hs[#hs + 1] = h
end
redis.call('RPUSH', rk, unpack(hs))
return #hs
"""
)

# ARGV: pickled key, keys-hash name, bucket-table prefix.
_REMOVE = (
    _NAMES
    + """
local k, kname, prefix = ARGV[1], ARGV[2], ARGV[3]
local rk = kname .. k
local n = drop(k, rk, prefix)
redis.call('HDEL', kname, k)
redis.call('DEL', rk)
return n
"""
)

# ARGV: bucket-table prefix, then the band hashes. One SUNION of the buckets; the members
# come back as one MessagePack array packed by Redis's own cmsgpack (in C), which the
# client splits several times faster than redis-py parses a reply of hundreds of elements.
_QUERY = """
local prefix = ARGV[1]
local buckets = {}
for i = 2, #ARGV do
  buckets[#buckets + 1] = prefix .. string.char(math.floor((i - 2) / 256), (i - 2) % 256) .. ARGV[i]
end
return cmsgpack.pack(redis.call('SUNION', unpack(buckets)))
"""


# ARGV: as _QUERY. The keys of the buckets with how many of them each is in: every
# bucket's members counted in a Lua table (a few thousand entries at a full window), the
# keys in order of first sight and their counts (<= 64 bands: MessagePack positive fixints,
# one byte each) as two MessagePack arrays.
_QUERY_COUNTS = """
local prefix = ARGV[1]
local count, members = {}, {}
for i = 2, #ARGV do
  local bucket = prefix .. string.char(math.floor((i - 2) / 256), (i - 2) % 256) .. ARGV[i]
  for _, k in ipairs(redis.call('SMEMBERS', bucket)) do
    local c = count[k]
    if c then
      count[k] = c + 1
    else
      count[k] = 1
      members[#members + 1] = k
    end
  end
end
local counts = {}
for j, k in ipairs(members) do counts[j] = count[k] end
return {cmsgpack.pack(members), cmsgpack.pack(counts)}
"""


def _array_header(blob: bytes) -> tuple[int, int]:
    """(element count, offset of the first element) of a MessagePack array."""
    head = blob[0]
    if head <= 0x9F:  # fixarray
        return head & 0x0F, 1
    if head == 0xDC:  # array 16
        return int.from_bytes(blob[1:3], "big"), 3
    return int.from_bytes(blob[1:5], "big"), 5  # array 32


def _unpack_small_ints(blob: bytes) -> np.ndarray:
    """A MessagePack array of integers 0-127 (positive fixints, one byte each)."""
    count, at = _array_header(blob)
    values = np.frombuffer(blob, dtype=np.uint8, count=count, offset=at)
    if count and int(values.max()) > 0x7F:
        raise ValueError("not an array of positive fixints")
    return values.astype(np.int64)


def _unpack_keys(blob: bytes) -> list[Hashable]:
    """The pickled keys of a MessagePack array of strings (what ``cmsgpack.pack`` makes of a
    list of Redis strings), unpickled."""
    count, at = _array_header(blob)
    out, loads = [], pickle.loads
    for _ in range(count):
        head = blob[at]
        if 0xA0 <= head <= 0xBF:  # fixstr
            size, at = head & 0x1F, at + 1
        elif head in (0xD9, 0xC4):  # str 8, bin 8
            size, at = blob[at + 1], at + 2
        elif head in (0xDA, 0xC5):  # str 16, bin 16
            size, at = int.from_bytes(blob[at + 1 : at + 3], "big"), at + 3
        else:  # str 32, bin 32
            size, at = int.from_bytes(blob[at + 1 : at + 5], "big"), at + 5
        out.append(loads(blob[at : at + size]))
        at += size
    return out


class CandidateIndex:
    """Banded LSH over article keys, in this process or shared in Redis (see the module docstring)."""

    def __init__(
        self, params: SketchParams, threshold: float, storage_config: dict[str, Any] | None = None
    ) -> None:
        config = dict(storage_config) if storage_config else {"type": "dict"}
        self.shared = config["type"] == "redis"
        if self.shared and not config.get("basename"):
            raise ValueError("a shared (Redis) index needs a basename")
        self.params = params
        self._dtype = _DTYPES[params.scheme]
        self._local: _BandIndex | None = None
        if self.shared:
            self._lsh = MinHashLSH(threshold=threshold, num_perm=params.num_perm, storage_config=config)
            self.bands = (self._lsh.b, self._lsh.r)
        else:
            self.bands = _bands(threshold, params.num_perm)
            self._local = _BandIndex(*self.bands, params.num_perm, params.scheme)
        self.pinned = f"{params.tag()};threshold={threshold!r};bands={self.bands[0]}x{self.bands[1]}"
        if self.shared:
            keys = self._lsh.keys
            self._redis: Any = keys._redis  # type: ignore[attr-defined]  # datasketch's own client
            self._keys_name: bytes = keys._name  # type: ignore[attr-defined]
            self._tables: list[bytes] = [t._name for t in self._lsh.hashtables]  # type: ignore[attr-defined]
            self._prefix = bytes(config["basename"]) + b"_bucket_"
            assert all(t == self._prefix + struct.pack(">H", i) for i, t in enumerate(self._tables))
            self._params_key = bytes(config["basename"]) + b"_params"
            self._insert_script = self._redis.register_script(_INSERT)
            self._remove_script = self._redis.register_script(_REMOVE)
            self._query_script = self._redis.register_script(_QUERY)
            self._query_counts_script = self._redis.register_script(_QUERY_COUNTS)
            self._deferring = False
            self._pending: list[tuple[Any, list[bytes]]] = []  # deferred (script, args)
            try:
                self.pin()
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------ shared index

    def pin(self) -> None:
        """Record a shared index's parameters in Redis, or refuse parameters that differ
        (nothing to do in this process)."""
        if not self.shared:
            return
        self.flush()
        self._redis.set(self._params_key, self.pinned.encode(), nx=True)
        stored = self._redis.get(self._params_key)
        if stored is not None and stored.decode() != self.pinned:
            raise IndexMismatchError(
                f"the shared index {self._params_key[:-7].decode(errors='replace')!r} was built with "
                f"{stored.decode(errors='replace')}, these settings need {self.pinned}: use another index "
                "name (or database) or delete the old index"
            )

    def close(self) -> None:
        """Close the Redis connections of a shared index (datasketch opens one client per band)."""
        if not self.shared:
            return
        self._pending = []  # writes deferred and never flushed: dropped (see batch())
        for storage in (self._lsh.keys, *self._lsh.hashtables):
            client = storage._redis  # type: ignore[attr-defined]
            storage._buffer.reset()  # type: ignore[attr-defined]
            client.close()
            client.connection_pool.disconnect()

    def intact(self) -> bool:
        """False when the shared index lost its data (Redis flushed or restarted empty)."""
        if not self.shared:
            return True
        self.flush()
        return bool(self._redis.exists(self._params_key))

    def keys(self) -> set[Hashable]:
        if self._local is not None:
            return self._local.keys()
        self.flush()
        return {pickle.loads(k) for k in self._redis.hkeys(self._keys_name)}

    def clear(self) -> None:
        """Delete the whole index (a shared one: every Redis key under its basename)."""
        if self._local is not None:
            self._local.clear()
            return
        self._pending = []
        prefix = self._params_key[:-7]
        names = [*self._redis.scan_iter(match=prefix + b"_*", count=1000)]
        for at in range(0, len(names), 1000):
            self._redis.delete(*names[at : at + 1000])

    def _hashes(self, sketch: Sketch) -> list[bytes]:
        values = sketch.values
        return [self._lsh._H(values[start:end]) for start, end in self._lsh.hashranges]

    # ------------------------------------------------------------------ operations

    def insert(self, key: Hashable, sketch: Sketch, label: int = 0) -> None:
        """Index ``key`` (a key already indexed is replaced). ``label``: an int64 the owner
        attaches to the key in this process (see :meth:`query_labels`); a shared index
        keeps none."""
        if self._local is not None:
            self._local.insert(key, sketch.values, label)
            return
        self._write(self._insert_script, self._insert_args(key, sketch.values))

    def _insert_args(self, key: Hashable, values: np.ndarray) -> list[bytes]:
        H = self._lsh._H
        return [
            pickle.dumps(key),
            self._keys_name,
            self._prefix,
            *(H(values[start:end]) for start, end in self._lsh.hashranges),
        ]

    def insert_many(
        self, items: Iterable[tuple[Hashable, bytes | np.ndarray | Sketch]], labels: list[int] | None = None
    ) -> int:
        """Index many keys at once: ``(key, signature)`` pairs, the signature as stored
        (:meth:`Sketcher.to_bytes`), an array of hash values or a :class:`Sketch`, with
        their ``labels`` (one per pair; see :meth:`insert`) or 0.
        In this process: one sort of every band key (a restart's bulk load); shared: the
        inserts go in pipelines of 1,000. Returns the number of pairs."""
        pairs = list(items)
        if not pairs:
            return 0
        if labels is not None and len(labels) != len(pairs):
            raise ValueError(f"{len(labels)} labels for {len(pairs)} keys")
        keys = [key for key, _ in pairs]
        values = _matrix((sig for _, sig in pairs), self.params.num_perm, self._dtype)
        if self._local is not None:
            self._local.insert_many(keys, values, labels)
            return len(pairs)
        self.flush()
        for at in range(0, len(pairs), 1000):
            self._pipelined(
                [
                    (self._insert_script, self._insert_args(key, row))
                    for key, row in zip(keys[at : at + 1000], values[at : at + 1000], strict=True)
                ]
            )
        return len(pairs)

    def query_counts(self, sketch: Sketch) -> tuple[list[Hashable], np.ndarray]:
        """:meth:`query`, with how many bands each key shares with ``sketch`` (an array in
        the keys' order). Redis counts them in one script (its Lua walks every bucket's
        members, where the plain query is one SUNION): the clusterer needs the counts to
        look for near-exact copies among a few hits instead of all of them."""
        if self._local is not None:
            return self._local.query_counts(sketch.values)
        keys, counts = self._run_query(self._query_counts_script, sketch)
        return _unpack_keys(keys), _unpack_small_ints(counts)

    def query_labels(self, sketch: Sketch, min_bands: int) -> tuple[np.ndarray, list[Hashable]] | None:
        """The labels (see :meth:`insert`, :meth:`relabel`) of the keys :meth:`query` returns,
        one per key, as an int64 array, with the keys that share at least ``min_bands``
        bands with ``sketch``; None from Redis, which keeps no labels. For a caller that
        needs the hits only in aggregate (the clusterer counts hits per story, its label):
        no Python object is made per hit."""
        if self._local is not None:
            return self._local.query_labels(sketch.values, min_bands)
        return None

    def relabel(self, key: Hashable, label: int) -> None:
        """Change the label of ``key`` (an absent key, or a shared index: nothing to do)."""
        if self._local is not None:
            self._local.relabel(key, label)

    def query(self, sketch: Sketch) -> list[Hashable]:
        """The keys sharing at least one band with ``sketch``, in no particular order."""
        if self._local is not None:
            return self._local.query(sketch.values)
        return _unpack_keys(self._run_query(self._query_script, sketch))

    def _run_query(self, script: Any, sketch: Sketch) -> Any:
        """A query script's reply, after the writes deferred so far (in the same round trip)."""
        args = [self._prefix, *self._hashes(sketch)]
        if not self._pending:
            return script(args=args)
        calls, self._pending = [*self._pending, (script, args)], []
        return self._pipelined(calls)[-1]

    # ------------------------------------------------------------------ deferred writes

    def _write(self, script: Any, args: list[bytes]) -> None:
        if not self._deferring:
            script(args=args)
            return
        self._pending.append((script, args))
        if len(self._pending) >= 1000:
            self.flush()

    def flush(self) -> None:
        """Send the writes deferred by :meth:`batch` (one pipeline)."""
        if not self.shared or not self._pending:
            return
        calls, self._pending = self._pending, []
        self._pipelined(calls)

    def _pipelined(self, calls: list[tuple[Any, list[bytes]]]) -> list[Any]:
        """Script calls in one pipeline (one round trip: no ``SCRIPT EXISTS`` first, as
        redis-py's pipelines do; a script Redis lost is loaded and the pipeline sent again,
        which is safe: every write is idempotent)."""
        from redis.exceptions import NoScriptError  # redis is an optional dependency

        for attempt in (0, 1):
            pipe = self._redis.pipeline(transaction=False)
            for script, args in calls:
                pipe.evalsha(script.sha, 0, *args)
            try:
                return pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                for script in {id(script): script for script, _ in calls}.values():
                    script.sha = self._redis.script_load(script.script)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Defer a shared index's inserts and removals (write-behind) until the next query,
        which sends them with it in one pipeline, or the end of the block: one round trip
        an article instead of two or three. Every read (query, keys, ``in``, len, intact,
        pin) sees the deferred writes. The block must end before the work that others rely
        on is published (the clustering transaction's commit); when it ends with an
        exception the writes still pending are dropped, as the transaction that decided
        them is rolled back (a rebuild reconciles the index). No-op in this process."""
        if not self.shared or self._deferring:
            yield
            return
        self._deferring = True
        try:
            yield
        except BaseException:
            self._pending = []
            raise
        else:
            self.flush()
        finally:
            self._deferring = False

    def remove(self, key: Hashable) -> None:
        """Unindex ``key``; an absent key is no error."""
        if self._local is not None:
            self._local.remove(key)
            return
        self._write(self._remove_script, [pickle.dumps(key), self._keys_name, self._prefix])

    def remove_many(self, keys: Iterable[Hashable]) -> None:
        """Unindex many keys (shared: in pipelines of 1,000)."""
        if self._local is not None:
            for key in keys:
                self._local.remove(key)
            return
        keys = list(keys)
        self.flush()
        for at in range(0, len(keys), 1000):
            self._pipelined(
                [
                    (self._remove_script, [pickle.dumps(k), self._keys_name, self._prefix])
                    for k in keys[at : at + 1000]
                ]
            )

    def __contains__(self, key: Hashable) -> bool:
        if self._local is not None:
            return key in self._local
        self.flush()
        return bool(self._redis.hexists(self._keys_name, pickle.dumps(key)))

    def __len__(self) -> int:
        if self._local is not None:
            return len(self._local)
        self.flush()
        return int(self._redis.hlen(self._keys_name))


@functools.lru_cache(maxsize=32)
def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's choice of (bands, rows) for a threshold (what its MinHashLSH would use)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r
