"""Sentence embeddings from WordLlama's static token vectors: the clusterer's semantic signal.

Why: lexical evidence (shared content words, TF-IDF) is thin for headlines: two reports of
one event often share one word or none ("Fed official hints at faster taper" / "Plosser
sees high bar for change in pace"). A static embedding puts related words near each other
("taper" ~ "pace", "Icahn" ~ "eBay", "quake" ~ "tremor"), so the mean of an article's token
vectors says what it is about even when the words differ.

What: ``wordllama`` (PyPI, MIT) ships its 256-dimensional token-embedding table (32,000
Llama-2 tokens, float16, 16 MB) and its tokenizer *inside the wheel*; nothing is fetched
from a hub. We read those two files directly (``tokenizers`` + ``safetensors``, both
dependencies of wordllama) instead of going through ``WordLlama.load``, which looks for the
tokenizer under a directory name the wheel does not use and would try the network. The
sentence vector is WordLlama's own recipe: mean of the token vectors (the model was trained
with that pooling), L2-normalised.

Cost: loading ~0.3 s once per process (the tokenizer JSON dominates) and ~55 MB RAM (the
table, shipped as float16, widened to float32: 32 MB; the tokenizer; a word cache of at most
200,000 words' token ids); per article one gather-and-sum over its tokens (words already
seen are not tokenised again), ~15-50 us for a headline or title + snippet whose words are
cached, plus ~3 us for each word not seen before (one call of the BPE model). Long bodies
are cut to their first ``max_chars`` characters: the lead says what the event is, and the
cost stays bounded.

Everything here is a pure function of the text (no state besides the loaded table), so
restore can recompute embeddings and get the same numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

try:  # what np.einsum calls (optimize=False, the default), without its Python wrapper
    from numpy._core.multiarray import c_einsum as _einsum
except ImportError:  # pragma: no cover - numpy < 2
    try:
        from numpy.core.multiarray import c_einsum as _einsum
    except ImportError:
        _einsum = np.einsum

DIM = 256
_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
_WEIGHTS = "weights/l2_supercat_256.safetensors"
_TENSOR = "embedding.weight"

_lock = threading.Lock()
_model: Embedder | None = None


def _package_dir() -> Path:
    """wordllama's install directory, found without importing it (its __init__ pulls pydantic)."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("wordllama is not installed (pip install wordllama)")
    return Path(next(iter(spec.submodule_search_locations)))


# the normaliser of WordLlama's (Llama 2's) tokenizer: "▁" before the text and for each space
_LLAMA_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ],
}


class _Pieces(dict[str, list[int]]):
    """word -> its token ids, filled on demand; cleared when it reaches ``size`` words
    (a plain bound: the result never depends on the cache).

    ``Tokenizer.encode`` splits off the added tokens (``<s>``...), normalises, pre-tokenises,
    runs the BPE model, post-processes and builds an ``Encoding`` (offsets, masks). For
    this tokenizer, on one word (no space) holding no added token, that is the model on
    ``"▁" + word``: no pre-tokeniser, the normaliser above (read from its serialised
    form), no special tokens added. So a miss calls the model directly: ~3 us a word
    instead of ~7. Any other tokenizer, or word, goes through ``encode``.
    """

    def __init__(self, tok: Any, size: int) -> None:
        super().__init__()
        self._encode = tok.encode
        direct = (
            tok.pre_tokenizer is None
            and tok.normalizer is not None
            and json.loads(tok.normalizer.__getstate__()) == _LLAMA_NORMALIZER
        )
        self._tokenize = tok.model.tokenize if direct else None
        self._added = tuple(t.content for t in tok.get_added_tokens_decoder().values())
        self._size = size

    def __missing__(self, word: str) -> list[int]:
        if len(self) >= self._size:
            self.clear()
        if self._tokenize is not None and not any(map(word.__contains__, self._added)):
            piece = [t.id for t in self._tokenize("\u2581" + word)]
        else:
            piece = self._encode(word, add_special_tokens=False).ids
        self[word] = piece
        return piece


class Embedder:
    """Unit sentence vectors: mean of WordLlama token embeddings."""

    def __init__(self, tokenizer_path: Path, weights_path: Path, max_chars: int = 600) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_path))
        tok.no_padding()
        tok.no_truncation()
        self._tok = tok
        table = load_file(str(weights_path))[_TENSOR]
        # widened to float32 once (32 MB): the sum is done in float32 anyway, and summing
        # float32 rows is 3-5x faster than summing float16 rows with a cast to float32
        # (numpy's cast buffering); float16 -> float32 is exact and the rows are added in the
        # same order, so every embedding is bit for bit what the float16 table gave
        self._table = np.ascontiguousarray(table, dtype=np.float32)
        self.max_chars = max_chars
        self.cache_size = 200_000  # words
        self._cache = _Pieces(self._tok, self.cache_size)
        self.dim = int(self._table.shape[1])

    def tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` (its first ``max_chars``), tokenised word by word.

        The Llama tokenizer never merges across a space, so tokenising each
        whitespace-separated word alone gives the same pieces (newlines aside); the
        words are cached, which saves most of the tokenizer's cost on a news stream
        (and the loop over the words runs in C: a cache miss calls the BPE model, see
        :class:`_Pieces`).
        """
        return list(chain.from_iterable(map(self._cache.__getitem__, text[: self.max_chars].split())))

    def embed(self, text: str) -> np.ndarray | None:
        """The unit vector of ``text``, or None when it has no tokens (or a zero mean)."""
        if not text:
            return None
        ids = self.tokens(text)
        if not ids:
            return None
        # the rows summed in order in float32, as ndarray.sum(axis=0, dtype=float32) of the
        # float16 rows did (np.add.reduce is what it calls), minus its wrappers
        vec = np.add.reduce(self._table.take(ids, axis=0), axis=0)
        norm = float(np.sqrt(_einsum("i,i->", vec, vec)))  # np.einsum minus its wrapper: same bits
        if norm <= 0.0 or not math.isfinite(norm):
            return None
        vec /= norm
        return vec


def embedder() -> Embedder:
    """The process-wide embedder (loaded once, on first use; thread-safe)."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                root = _package_dir()
                _model = Embedder(root / _TOKENIZER, root / _WEIGHTS)
    return _model


def article_text(title: str, text: str) -> str:
    """What is embedded: the title, then the body unless it only repeats the title."""
    title = (title or "").strip()
    body = (text or "").strip()
    if not body or body == title:
        return title
    if title and body.startswith(title):
        return body
    return f"{title}\n{body}" if title else body


def centred_cosines(
    sums: np.ndarray, counts: np.ndarray, vec: np.ndarray, mean: np.ndarray | None
) -> np.ndarray:
    """Cosine of ``vec`` to each row of ``sums`` (a story's summed member vectors), in [-1, 1].

    With ``mean`` both sides are taken relative to it: row ``i`` becomes
    ``sums[i] - counts[i] * mean`` (each of its ``counts[i]`` members centred) and the
    vector ``vec - mean``. A zero row or vector scores 0. (Few numpy calls: this runs for
    every article, on a few dozen rows.)
    """
    return centred_cosines_owned(np.array(sums, dtype=np.float64), counts, vec, mean)  # a copy


def centred_cosines_owned(
    rows: np.ndarray, counts: Any, vec: np.ndarray, mean: np.ndarray | None
) -> np.ndarray:
    """:func:`centred_cosines` of a float64 ``rows`` the caller owns (centred in place)."""
    a = np.asarray(vec, dtype=np.float64)
    if mean is not None:
        rows -= np.multiply.outer(np.asarray(counts, dtype=np.float64), mean)
        a = a - mean
    norms = np.sqrt(_einsum("ij,ij->i", rows, rows) * _einsum("i,i->", a, a))
    out = _einsum("ij,j->i", rows, a) / np.maximum(norms, 1e-300)
    out[norms <= 1e-12] = 0.0
    # np.clip to [-1, 1] without its Python wrappers (the values are finite: same result)
    np.minimum(out, 1.0, out=out)
    return np.maximum(out, -1.0, out=out)
