"""MinHash sketches and the LSH candidate index: the only module that imports datasketch.

Its job is to *propose* candidates cheaply, never to decide (lemon24/reader's dedupe
plugin makes the same split): an article's sketch is looked up in a banded
``MinHashLSH`` and the keys of the articles sharing a band come back. The cost of a
query depends on the number of bands and on how many articles collide, not on the
number of stories held.

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
* Queries are never issued inside an open ``insertion_session``; the index inserts one
  key at a time.
* Hashing uses 32-bit xxhash (``affine32`` needs 32-bit input; 64-bit for ``affine64``)
  on a single template MinHash that is copied per article: permutations are drawn
  once, and hashing is far cheaper than the default SHA-1.

The storage is chosen by a plain dict, as in datasketch itself: ``None`` or
``{"type": "dict"}`` keeps the index in this process; ``{"type": "redis", "redis":
{...}, "basename": b"..."}`` shares it between workers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH

_DTYPES = {"affine32": np.dtype("<u4"), "legacy": np.dtype("<u8"), "affine64": np.dtype("<u8")}


def _h32(b: bytes) -> int:
    return xxhash.xxh32_intdigest(b)


def _h64(b: bytes) -> int:
    return xxhash.xxh64_intdigest(b)


@dataclass(frozen=True)
class SketchParams:
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"

    def tag(self) -> str:
        return f"{self.scheme}:{self.seed}:{self.num_perm}"


class Sketch:
    """An opaque MinHash of one article (datasketch's object stays inside this module)."""

    __slots__ = ("_m",)

    def __init__(self, m: MinHash) -> None:
        self._m = m

    def jaccard(self, other: Sketch) -> float:
        return float(np.count_nonzero(self._m.hashvalues == other._m.hashvalues)) / len(self._m.hashvalues)


class Sketcher:
    """Makes sketches of term sets with pinned parameters."""

    def __init__(self, params: SketchParams) -> None:
        self.params = params
        hashfunc = _h64 if params.scheme == "affine64" else _h32
        self._template = MinHash(
            num_perm=params.num_perm,
            seed=params.seed,
            hashfunc=hashfunc,
            scheme=params.scheme,  # type: ignore[arg-type]
        )
        self._dtype = _DTYPES[params.scheme]

    def sketch(self, terms: Iterable[str]) -> Sketch:
        m = self._template.copy()
        m.update_batch([t.encode("utf-8") for t in terms])
        return Sketch(m)

    def to_bytes(self, sketch: Sketch) -> bytes:
        return np.asarray(sketch._m.hashvalues, dtype=self._dtype).tobytes()

    def from_bytes(self, data: bytes) -> Sketch | None:
        """The sketch stored as ``data``, or None when its size does not fit these params."""
        if len(data) != self.params.num_perm * self._dtype.itemsize:
            return None
        values = np.frombuffer(data, dtype=self._dtype).astype(self._template.hashvalues.dtype)
        m = MinHash(
            num_perm=self.params.num_perm,
            seed=self.params.seed,
            hashvalues=values,
            permutations=self._template.permutations,
            scheme=self.params.scheme,  # type: ignore[arg-type]
        )
        return Sketch(m)


class CandidateIndex:
    """A MinHashLSH over article keys, with optional external storage."""

    def __init__(
        self, params: SketchParams, threshold: float, storage_config: dict[str, Any] | None = None
    ) -> None:
        config = dict(storage_config) if storage_config else {"type": "dict"}
        self._lsh = MinHashLSH(threshold=threshold, num_perm=params.num_perm, storage_config=config)
        self.bands = (self._lsh.b, self._lsh.r)

    def insert(self, key: Hashable, sketch: Sketch) -> None:
        self._lsh.insert(key, sketch._m, check_duplication=False)

    def query(self, sketch: Sketch) -> list[Hashable]:
        return self._lsh.query(sketch._m)

    def remove(self, key: Hashable) -> None:
        if key in self._lsh:
            self._lsh.remove(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._lsh
