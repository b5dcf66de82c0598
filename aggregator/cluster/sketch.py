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

The shared (Redis) index
------------------------
The index is datasketch's own ``MinHashLSH`` over its own Redis storage: the same keys
(``<basename>_keys``, ``<basename>_bucket_<band>``), the same pickled keys, so a plain
``MinHashLSH(storage_config=...)`` opened on the basename sees every entry. Three things
are added on top, all on that layout:

* **Pinned parameters.** ``<basename>_params`` holds the sketch tag, the threshold and the
  bands the index was built with; it is written once (``SET NX``) and an index opened with
  other parameters is refused (:class:`IndexMismatchError`): signatures of different
  schemes, seeds or sizes, or other bands, would silently never collide.
* **One round trip per operation.** datasketch's Redis storage issues a command per band
  (64 bands: ~130 commands an insert, ~200 a remove); here a query is one ``SUNION`` of the
  band buckets and an insert or remove is one Lua script, atomic, with datasketch's layout.
* **Idempotent writes.** Inserting a key that is already indexed first removes its old band
  entries (a clustering pass that rolled back after writing to Redis leaves nothing stale
  behind when the article is clustered again); removing an absent key does nothing, so
  every worker can prune the same expired article.
"""

from __future__ import annotations

import pickle
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


class IndexMismatchError(ValueError):
    """A shared index was built with other MinHash or LSH parameters than these."""


# KEYS: none (the names are computed); ARGV: pickled key, keys-hash name, key's list,
# then (bucket-table name, band hash) per band. Removes an earlier entry of the key first.
_INSERT = """
local k, kname, rk = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('LRANGE', rk, 0, -1)
for i, h in ipairs(old) do
  local name = ARGV[2 + 2 * i]
  if name then
    local bucket = name .. h
    redis.call('SREM', bucket, k)
    if redis.call('EXISTS', bucket) == 0 then redis.call('HDEL', name, h) end
  end
end
redis.call('DEL', rk)
redis.call('HSET', kname, k, rk)
local n = (#ARGV - 3) / 2
local hs = {}
for i = 1, n do
  local name, h = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local bucket = name .. h
  redis.call('HSET', name, h, bucket)
  redis.call('SADD', bucket, k)
  hs[i] = h
end
redis.call('RPUSH', rk, unpack(hs))
return n
"""

# ARGV: pickled key, keys-hash name, key's list, then the bucket-table name per band.
_REMOVE = """
local k, kname, rk = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('LRANGE', rk, 0, -1)
for i, h in ipairs(old) do
  local name = ARGV[3 + i]
  if name then
    local bucket = name .. h
    redis.call('SREM', bucket, k)
    if redis.call('EXISTS', bucket) == 0 then redis.call('HDEL', name, h) end
  end
end
redis.call('HDEL', kname, k)
redis.call('DEL', rk)
return #old
"""


class CandidateIndex:
    """A MinHashLSH over article keys, in this process or shared in Redis (see the module docstring)."""

    def __init__(
        self, params: SketchParams, threshold: float, storage_config: dict[str, Any] | None = None
    ) -> None:
        config = dict(storage_config) if storage_config else {"type": "dict"}
        self.shared = config["type"] == "redis"
        if self.shared and not config.get("basename"):
            raise ValueError("a shared (Redis) index needs a basename")
        self._lsh = MinHashLSH(threshold=threshold, num_perm=params.num_perm, storage_config=config)
        self.bands = (self._lsh.b, self._lsh.r)
        self.pinned = f"{params.tag()};threshold={threshold!r};bands={self._lsh.b}x{self._lsh.r}"
        if self.shared:
            keys = self._lsh.keys
            self._redis: Any = keys._redis  # type: ignore[attr-defined]  # datasketch's own client
            self._keys_name: bytes = keys._name  # type: ignore[attr-defined]
            self._tables: list[bytes] = [t._name for t in self._lsh.hashtables]  # type: ignore[attr-defined]
            self._params_key = bytes(config["basename"]) + b"_params"
            self._insert_script = self._redis.register_script(_INSERT)
            self._remove_script = self._redis.register_script(_REMOVE)
            try:
                self.pin()
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------ shared index

    def pin(self) -> None:
        """Record this index's parameters in Redis, or refuse parameters that differ."""
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
        for storage in (self._lsh.keys, *self._lsh.hashtables):
            client = storage._redis  # type: ignore[attr-defined]
            storage._buffer.reset()  # type: ignore[attr-defined]
            client.close()
            client.connection_pool.disconnect()

    def intact(self) -> bool:
        """False when the shared index lost its data (Redis flushed or restarted empty)."""
        return not self.shared or bool(self._redis.exists(self._params_key))

    def keys(self) -> set[Hashable]:
        if not self.shared:
            return set(self._lsh.keys.keys())
        return {pickle.loads(k) for k in self._redis.hkeys(self._keys_name)}

    def clear(self) -> None:
        """Delete the whole shared index (tests, benchmarks, operators starting afresh)."""
        if self.shared:
            prefix = self._params_key[:-7]
            for name in [*self._redis.scan_iter(match=prefix + b"_*", count=1000)]:
                self._redis.delete(name)

    def _hashes(self, sketch: Sketch) -> list[bytes]:
        values = sketch._m.hashvalues
        return [self._lsh._H(values[start:end]) for start, end in self._lsh.hashranges]

    # ------------------------------------------------------------------ operations

    def insert(self, key: Hashable, sketch: Sketch) -> None:
        if not self.shared:
            self._lsh.insert(key, sketch._m, check_duplication=False)
            return
        k = pickle.dumps(key)
        args: list[bytes] = [k, self._keys_name, self._keys_name + k]
        for name, h in zip(self._tables, self._hashes(sketch), strict=True):
            args += [name, h]
        self._insert_script(args=args)

    def query(self, sketch: Sketch) -> list[Hashable]:
        if not self.shared:
            return self._lsh.query(sketch._m)
        buckets = [name + h for name, h in zip(self._tables, self._hashes(sketch), strict=True)]
        return [pickle.loads(k) for k in self._redis.sunion(buckets)]

    def remove(self, key: Hashable) -> None:
        if not self.shared:
            if key in self._lsh:
                self._lsh.remove(key)
            return
        k = pickle.dumps(key)
        self._remove_script(args=[k, self._keys_name, self._keys_name + k, *self._tables])

    def __contains__(self, key: Hashable) -> bool:
        if not self.shared:
            return key in self._lsh
        return bool(self._redis.hexists(self._keys_name, pickle.dumps(key)))

    def __len__(self) -> int:
        if not self.shared:
            return len(self._lsh.keys.keys())
        return int(self._redis.hlen(self._keys_name))
