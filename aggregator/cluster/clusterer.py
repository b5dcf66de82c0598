"""The streaming clusterer: candidates from LSH, decision from weighted cosine and evidence.

See the package docstring (``aggregator/cluster/__init__.py``) for the theory of operation.
This module holds the state and the decision rule; text features are in ``features``,
datasketch in ``sketch``. It does no I/O and reads no clock: time comes only from the
articles' ``published`` values (the one exception: a shared candidate index lives in Redis,
behind ``sketch.CandidateIndex``).

Several workers, one index
--------------------------
With ``storage_config={"type": "redis", ...}`` the LSH index is shared by every worker and
survives restarts; everything else stays per process and is *derived* from the database:
the articles held in the window with their vectors, shingles and fingerprints, the IDF
counts, the story centroids. That split is deliberate:

* the LSH index is the one part that is costly to rebuild (~100-150 us an article in
  memory, a few hundred thousand articles in a 72 h window at scale) and that is pure
  data (keys and band hashes), the same for every process, written once per article;
* the rest changes on every article (IDF counts move with the window, centroids with
  every join, merges fold stories) and must be identical in every worker for the result
  not to depend on the worker that decided. Keeping it in Redis would make every decision
  dozens of round trips and need cross-process transactions; deriving it from the stored
  assignments is cheap (no MinHash to recompute: the signatures are stored) and exact,
  because ``restore`` replays the same ``add`` in ``cluster_seq`` order.

So :meth:`add` writes an article to the index only when it is decided here (or when the
index is local); :meth:`restore` of a shared index leaves the index alone (the worker that
decided the article wrote it); pruning removes expired articles from the shared index too
(idempotent: every worker prunes the same articles at the same clock, and passes are
serialised by the database); :meth:`reconcile_index` repairs the shared index after a full
rebuild (entries of articles no longer held go, held articles missing from it are added:
a Redis that lost its data, a pass that rolled back).
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import math
import operator
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import parallel
from .features import Features, extract, extract_terms, sketch_terms
from .semantic import article_text, centred_cosines, centred_cosines_owned, embedder
from .settings import ClusterSettings, Decision, Document
from .sketch import CandidateIndex, Sketch, Sketcher, SketchParams

Vector = dict[str, float]


class RestoreError(RuntimeError):
    """A restore's promise did not hold (see :meth:`Clusterer.bulk_restore`): restore again
    without it."""


@dataclass(frozen=True)
class Prepared:
    """An article's features and sketch, computed without touching the clusterer's state."""

    doc: Document
    features: Features
    sketch: Sketch
    time: float | None  # POSIX seconds of ``published``; None = unknown
    raw: Vector  # term weights before IDF (whole article)
    emb: Any = None  # unit sentence embedding (numpy float32) or None (semantic signal off / no tokens)


@dataclass(slots=True)  # no instance dict: smaller, and quicker to read for the hundreds of hits
class _Article:
    id: int
    story: int
    time: float  # effective time (``published``, else the stream's clock when it arrived)
    vec: Vector  # unit vector, IDF as of when it was added
    shingles: frozenset[str]
    fingerprint: int
    sketch: Sketch | None  # None: restored ``transient`` (see Clusterer.restore)
    emb: Any = None  # the article's unit embedding (numpy), None without one


@dataclass(slots=True)  # no instance dict: scoring reads a few dozen stories an article
class _Story:
    id: int
    first: float
    last: float
    dated: tuple[float, float] | None = None  # (first, last) ``published`` of the dated members
    size: int = 0
    centroid: Vector = field(default_factory=dict)  # sum of the members' unit vectors
    norm2: float = 0.0  # squared norm of centroid, kept incrementally
    total_length: int = 0  # sum of the members' distinct-term counts
    specifics: Counter[str] = field(default_factory=Counter)  # names and numbers: how many members have each
    specific_members: int = 0  # members with at least one name or number
    members: set[int] = field(default_factory=set)  # ids of the members still held
    # sum of the members' unit embeddings (numpy: a view of its row), None while no member has one
    sem: Any = None
    sem_n: int = 0  # members in ``sem``
    row: int = 0  # its row of Clusterer._sem_rows (0, all zeros, while ``sem`` is None)
    tick: int = -1  # order of its latest article among all added (see Clusterer._recent)


class RestoreItem(NamedTuple):
    """One stored article to :meth:`Clusterer.restore_many` (the arguments of ``restore``)."""

    doc: Document
    story_id: int
    signature: bytes | None = None
    params: str | None = None
    transient: bool = False


_TRANSIENT, _SIGNED, _UNSIGNED = 0, 1, 2  # what a restored article needs computed
_RESTORE_CHUNK = 500  # articles per unit of work shared with the restore's helper processes


@dataclass(frozen=True)
class _RestoreSpec:
    """What the pure part of a restore depends on (sent to helper processes)."""

    title_weight: float
    name_weight: float
    semantic: bool
    params: SketchParams


_sketchers: dict[SketchParams, Sketcher] = {}


def _restore_parts(job: tuple[_RestoreSpec, list[tuple[str, str, int]]]) -> tuple[list[Any], Any]:
    """The stateless part of restoring a chunk of articles: for each ``(title, text,
    kind)``, a transient article's :func:`extract_terms`, otherwise its features, raw
    term weights, the row of its embedding (-1 for none) and the sketch's bytes when the
    stored signature cannot be used (None when it can); and the chunk's embeddings, one
    row each (one array crosses a process boundary far quicker than hundreds). Pure: a
    helper process gives the same as this one."""
    spec, rows = job
    emb = embedder() if spec.semantic else None
    sketcher = _sketchers.get(spec.params)
    if sketcher is None:
        sketcher = _sketchers[spec.params] = Sketcher(spec.params)
    out: list[Any] = []
    vecs: list[Any] = []
    for title, text, kind in rows:
        if kind == _TRANSIENT:
            out.append(extract_terms(title, text))
            continue
        f, raw, vec = _features(title, text, spec.title_weight, spec.name_weight, emb)
        row = -1
        if vec is not None:
            row = len(vecs)
            vecs.append(vec)
        blob = sketcher.to_bytes(sketcher.sketch(sketch_terms(f))) if kind == _UNSIGNED else None
        out.append((f, raw, row, blob))
    return out, np.stack(vecs) if vecs else None


_gc_lock = threading.Lock()
_gc_pauses = 0  # restores running with the cyclic collector paused
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a large restore (or a rebuild's read) runs.

    A rebuild makes millions of long-lived containers (rows, term dicts and sets,
    stories) and no cycles; the collector would walk the growing heap again and again as
    it grows: ~40% of a rebuild's time at a million stored articles (20.0 s -> 12.3 s with
    helpers). Other threads keep freeing by reference counting; their cyclic garbage waits
    for the end. Nested and concurrent pauses share one."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def _features(
    title: str, text: str, title_weight: float, name_weight: float, emb: Any
) -> tuple[Features, Vector, Any]:
    """An article's features, its term weights before IDF and its embedding (None without
    an embedder or terms): the part of :meth:`Clusterer.prepare` that reads no state."""
    f = extract(title, text)
    counts = Counter(f.title_terms)
    counts.update(f.body_terms)
    title_set = set(f.title_terms)
    raw: Vector = {}
    for term, k in counts.items():
        w = 1.0 + math.log(k)
        if term in title_set:
            w += title_weight
        if term in f.names:
            w += name_weight
        raw[term] = w
    vec = emb.embed(article_text(title, text)) if emb is not None and raw else None
    return f, raw, vec


def _add_into(target: Vector, vec: Vector, norm2: float, scale: float = 1.0) -> float:
    """target += scale * vec; returns the new squared norm of target."""
    dot = 0.0
    sq = 0.0
    for k, v in vec.items():
        v *= scale
        old = target.get(k, 0.0)
        dot += old * v
        sq += v * v
        target[k] = old + v
    return norm2 + 2.0 * dot + sq


def _copy_min_bands(bands: int, rows: int, jaccard: float, miss: float = 1e-9) -> int:
    """The fewest LSH bands a near-exact copy shares with its original, but for odds ``miss``.

    The sketch is a MinHash of the very term set whose Jaccard ``J`` the copy test
    measures, so a band (``rows`` values) agrees with probability ``J ** rows``, and
    a pair with ``J >= jaccard`` shares ``Binomial(bands, jaccard ** rows)`` bands or
    more. The largest ``k`` with ``P(X < k) <= miss`` is returned: hits sharing fewer
    bands are skipped by the copy test (64 bands of 2 rows, J >= 0.8: ``k`` = 17 of an
    expected 41). At least 1 (every hit shares one band).
    """
    p = jaccard**rows
    below = 0.0
    for k in range(bands + 1):
        below += math.comb(bands, k) * p**k * (1.0 - p) ** (bands - k)  # P(X <= k)
        if below > miss:
            return max(1, k)
    return max(1, bands)


def _ranked(counts: Counter[int]) -> Iterator[tuple[int, int]]:
    """(hits, story) pairs, most hits first, then the lowest story id."""
    return ((-neg, sid) for neg, sid in sorted([(-n, sid) for sid, n in counts.items()]))


_TRUE = np.ones(1, dtype=bool)


def _ranked_labels(labels: np.ndarray) -> Iterator[tuple[int, int]]:
    """:func:`_ranked` of the stories in ``labels`` (one per hit), counted in numpy.

    What ``np.unique(labels, return_counts=True)`` and a ``np.lexsort`` by (count, story)
    give, without their Python layers (~20 us an article): the labels sorted, the runs
    of equal labels counted, and a stable sort on the counts keeps the stories of equal
    counts in ascending order."""
    if not len(labels):
        return iter(())
    labels = np.sort(labels)
    starts = np.concatenate((_TRUE, labels[1:] != labels[:-1])).nonzero()[0]
    counts = np.empty(len(starts), dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = len(labels) - starts[-1]
    order = (-counts).argsort(kind="stable")
    return zip(counts[order].tolist(), labels[starts[order]].tolist(), strict=True)


def _gap(st: _Story, t: float | None) -> float:
    """Seconds from ``t`` to the story's span of articles (0 inside it or with no time)."""
    return 0.0 if t is None else max(0.0, st.first - t, t - st.last)


def _unit(vec: Vector) -> Vector:
    values = vec.values()
    n = math.sqrt(sum(map(operator.mul, values, values)))
    if n <= 0.0:
        return {}
    return {k: v / n for k, v in vec.items()}


def _dot(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    s = 0.0
    for k, v in a.items():
        w = b.get(k)
        if w is not None:
            s += v * w
    return s


class Clusterer:
    """Assigns each arriving article to a story; see the package docstring."""

    def __init__(
        self, settings: ClusterSettings | None = None, storage_config: dict[str, Any] | None = None
    ) -> None:
        self.settings = s = settings or ClusterSettings()
        self._params = SketchParams(num_perm=s.num_perm, seed=s.seed, scheme=s.scheme)
        self._sketcher = Sketcher(self._params)
        self._index = CandidateIndex(self._params, s.threshold, storage_config)
        self._copy_bands = _copy_min_bands(*self._index.bands, s.copy_jaccard)
        self._window = s.window_hours * 3600.0
        self._articles: dict[int, _Article] = {}
        self._stories: dict[int, _Story] = {}
        self._fingerprints: dict[int, int] = {}  # fingerprint -> earliest article id still held
        self._df: Counter[str] = Counter()  # document frequency over the articles held
        self._n = 0  # articles held (the IDF's N)
        self._clock: float | None = None  # newest effective time seen
        self._expiry: list[tuple[float, int]] = []  # heap of (time, article id)
        self._version = 0  # bumped by every change of the IDF counts
        self._cache: tuple[tuple[int, int], Vector] | None = None
        self._embedder = embedder() if s.semantic else None
        # stories by their last join: {tick of the story's latest article: story id}, oldest first
        self._recent: OrderedDict[int, int] = OrderedDict()
        self._tick = 0  # articles added so far (orders the stories by their latest article)
        # the stories' embedding sums, a row each (their ``sem`` are views of it): scoring gathers
        # a few dozen rows by index in one numpy call. Row 0 stays zeros (a story without one);
        # rows not handed out yet are untouched zero pages (np.zeros), not resident memory.
        self._sem_rows = np.zeros((256, self._embedder.dim if self._embedder is not None else 1))
        self._sem_next = 1  # rows handed out
        self._sem_free: list[int] = []  # rows of stories gone
        self._sem_sum: Any = None  # sum of the embeddings of the articles held (their mean centres cosines)
        self._sem_count = 0
        self._mean_cache: tuple[int, Any] | None = None  # (state version, mean embedding)
        self._bulk = False  # inside bulk_restore: the in-process index is built at its end
        self._transient = 0  # articles restored transient still held

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        return len(self._articles)

    @property
    def bands(self) -> tuple[int, int]:
        return self._index.bands

    def prepare(self, doc: Document) -> Prepared:
        return self._prepare(doc, None)

    def signature(self, prepared: Prepared) -> bytes:
        return self._sketcher.to_bytes(prepared.sketch)

    def decide(self, prepared: Prepared) -> Decision:
        s = self.settings
        f = prepared.features
        if not prepared.raw:
            return Decision(None, 0.0, "empty", None)
        # 1. exact copy: same normalised text as an article still held
        t = prepared.time if prepared.time is not None else self._clock
        window = self._window
        original = self._fingerprints.get(f.fingerprint)
        if original is not None and original in self._articles:
            a = self._articles[original]
            if t is None or abs(t - a.time) <= window:
                return Decision(a.story, 1.0, "copy", original)
        # the LSH hits. In process the index labels each article with its story, so the hits
        # are counted per story in numpy (hundreds to thousands of hits, a few dozen stories
        # scored) and only the hits sharing enough bands to be near-exact copies are looked
        # up: only those can have the term-set Jaccard of a copy (see _copy_min_bands: a real
        # copy is missed with probability < 1e-9). A shared index returns keys with their
        # band counts (no labels): every hit still held is looked up here to count stories,
        # and the copy test takes the same near-copy hits.
        labelled = self._index.query_labels(prepared.sketch, self._copy_bands)
        if labelled is None:
            hits, bands = self._index.query_counts(prepared.sketch)
            held = [a for a in map(self._articles.get, hits) if a is not None]  # type: ignore[arg-type]
            ranked = _ranked(Counter([a.story for a in held]))
            near: Iterable[Any] = itertools.compress(hits, (bands >= self._copy_bands).tolist())
        else:
            labels, near = labelled
            ranked = _ranked_labels(labels)
        pool = [a for a in map(self._articles.get, near) if a is not None]
        # 2. near-exact copy among the LSH hits
        if f.length >= s.copy_min_terms:
            best_j, best_a = 0.0, None
            shingles = f.shingles
            size = len(shingles)
            lo, hi = size * s.copy_jaccard, size / s.copy_jaccard
            for a in pool:
                ash = a.shingles
                other = len(ash)
                if other < lo or other > hi or (t is not None and abs(t - a.time) > window):
                    continue  # sizes alone rule out the Jaccard needed
                inter = len(shingles & ash)
                j = inter / (size + other - inter)
                if j > best_j or (j == best_j and best_a is not None and a.id < best_a.id):
                    best_j, best_a = j, a
            if best_a is not None and best_j >= s.copy_jaccard:
                return Decision(best_a.story, 1.0, "copy", best_a.id)
        # 3. similarity to the candidate stories (score_candidates, in steps)
        cands = self._candidates(prepared, ranked)
        lexical = self._lexical(prepared, cands)
        scored = self._with_semantic(prepared, lexical, every=False)
        passing = [(c["score"] - c["threshold"], c) for c in scored if c["score"] >= c["threshold"]]
        if not passing:
            if prepared.emb is not None and s.semantic_recent > 0:
                # nothing passes on words: let the stories joined most recently compete on
                # meaning too (a headline sharing no word with its story is no LSH hit); the
                # hits' stories keep their lexical scores (score_candidates(recent=True))
                recent = self._lexical(prepared, self._recent_candidates(prepared, cands))
                scored = self._with_semantic(prepared, lexical + recent, every=True)
            sem = self._semantic_choice(scored)
            if sem is not None:
                merge = self._bridged(prepared, sem, scored)
                return Decision(
                    sem["story"], round(min(1.0, max(0.0, sem["sem"])), 6), "semantic", None, merge
                )
            best = max((c["score"] for c in scored), default=0.0)
            return Decision(None, round(best, 6), "new", None)
        passing.sort(key=lambda x: (-x[0], x[1]["story"]))
        top = passing[0][1]
        merge = self._bridged(prepared, top, scored)
        return Decision(top["story"], round(top["score"], 6), "similar", None, merge)

    def _semantic(self, emb: Any, sts: list[_Story]) -> Any:
        """Embedding cosine of the article to each story's mean embedding (0 for a story without).

        With ``semantic_center`` both sides are taken relative to the mean embedding of the
        articles held: what every article in the stream shares (news register, the feed's
        common subject) is no evidence of one event, like a word in every document.
        """
        # a fresh float64 matrix (the rows gathered by index): centred in place
        rows = self._sem_rows[[st.row for st in sts]]
        return centred_cosines_owned(rows, [st.sem_n for st in sts], emb, self._sem_mean())

    def _sem_row(self, st: _Story) -> Any:
        """Give ``st`` a row of ``_sem_rows`` for its embedding sum; returns its ``sem`` (the
        row's view, to be written whole). A full matrix doubles, and every story's view
        is pointed at the new one."""
        if self._sem_free:
            row = self._sem_free.pop()
        else:
            row = self._sem_next
            self._sem_next += 1
            if row == len(self._sem_rows):
                rows = np.zeros((2 * row, self._sem_rows.shape[1]))
                rows[:row] = self._sem_rows
                self._sem_rows = rows
                for other in self._stories.values():
                    if other.row:
                        other.sem = rows[other.row]
        st.row = row
        st.sem = self._sem_rows[row]
        return st.sem

    def _sem_mean(self) -> Any:
        """The mean embedding to centre on, or None (centring off / nothing held yet).

        The IDF prior's pseudo-articles count as articles without an embedding: they
        shrink the mean towards 0 while the stream is nearly empty (the mean of two
        articles is not "what every article shares").
        """
        if not self.settings.semantic_center or not self._sem_count:
            return None
        if self._mean_cache is None or self._mean_cache[0] != self._version:
            self._mean_cache = (
                self._version,
                self._sem_sum / (self._sem_count + self.settings.idf_prior_docs),
            )
        return self._mean_cache[1]

    def _story_semantic(self, a: _Story, emb: Any, b: _Story) -> float:
        """Embedding cosine of story ``a`` with the article added and story ``b`` (centred)."""
        mean = self._sem_mean()
        x = a.sem + emb
        if mean is not None:
            x = x - a.sem_n * mean  # centred_cosines takes one more mean off: (a.sem_n + 1) members
        return float(centred_cosines(b.sem[None, :], np.array([b.sem_n]), x, mean)[0])

    def _semantic_choice(self, scored: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The story whose mean embedding is close enough when the words alone were not.

        Only consulted when no story passes the lexical rule. The threshold grows with the
        article's length like the lexical one (``semantic_scale * sqrt(L)``): a headline of
        7 terms needs 0.45, title + snippet (25 terms) 0.85, and from ~35 terms on it is
        above 1 - a text that long gives the words enough to go on, and two reports of
        *different* events of one kind (two earthquakes) mean nearly the same thing.
        """
        s = self.settings
        if not scored:
            return None
        top = min(scored, key=lambda c: (-c["sem"], c["story"]))
        if top["sem"] < s.semantic_scale * math.sqrt(top["length"]):
            return None
        return top

    def _bridged(
        self, prepared: Prepared, top: dict[str, Any], scored: list[dict[str, Any]]
    ) -> tuple[int, ...]:
        """Other candidate stories that this article bridges to its chosen story.

        The article only *proposes* the pair (it must come near the other story's
        threshold); the pair is merged when the two stories' centroids, the article
        included in the chosen one, are similar themselves.
        """
        s = self.settings
        others = [
            c for c in scored if c["story"] != top["story"] and c["score"] >= s.merge_ratio * c["threshold"]
        ]
        if prepared.emb is not None:
            # the article must also *mean* what the other story is about: sharing its generic
            # words ("stocks", "SXSW") while being about something else is no bridge
            others = [c for c in others if c["sem"] >= s.semantic_bridge]
        sem_others = []
        if prepared.emb is not None and s.semantic_merge <= 1.0:
            need_sem = s.semantic_scale * math.sqrt(prepared.features.length)
            ids = {c["story"] for c in others}
            sem_others = [
                c
                for c in scored
                if c["story"] != top["story"] and c["story"] not in ids and c["sem"] >= need_sem
            ]
        out = []
        if sem_others:
            a = self._stories[top["story"]]
            for c in sem_others:
                b = self._stories[c["story"]]
                if a.sem is None or b.sem is None:
                    continue
                sim = self._story_semantic(a, prepared.emb, b)
                c["story_sem"] = sim
                if sim >= s.semantic_merge:
                    out.append(c["story"])
        if not others:
            return tuple(sorted(out))
        a = self._stories[top["story"]]
        vec = self._doc_vector(prepared)
        centroid = dict(a.centroid)
        norm2 = _add_into(centroid, vec, a.norm2)
        for c in others:
            b = self._stories[c["story"]]
            if b.norm2 <= 0 or norm2 <= 0:
                continue
            sim = _dot(centroid, b.centroid) / math.sqrt(norm2 * b.norm2)
            c["story_cos"] = sim
            mean_len = (a.total_length + b.total_length + prepared.features.length) / (a.size + b.size + 1)
            need = min(s.merge_threshold, s.merge_scale * math.sqrt(mean_len))
            if a.dated is not None and b.dated is not None:
                # the join rule's time factor: fragments far apart in time need more agreement
                dgap = max(0.0, a.dated[0] - b.dated[1], b.dated[0] - a.dated[1])
                need *= 1.0 + s.time_penalty * dgap / self._window
            if sim >= need and prepared.emb is not None and a.sem is not None and b.sem is not None:
                # the two stories as wholes must be about the same thing too
                sim_sem = self._story_semantic(a, prepared.emb, b)
                c["story_sem"] = sim_sem
                if sim_sem < s.semantic_story:
                    continue
            if sim >= need:
                out.append(c["story"])
        return tuple(sorted(out))

    @property
    def shared(self) -> bool:
        """True when the candidate index is shared (Redis) rather than in this process."""
        return self._index.shared

    def close(self) -> None:
        """Release the candidate index's connections (a shared index keeps its entries)."""
        self._index.close()

    def index_intact(self) -> bool:
        """False when a shared index lost its data (Redis flushed): rebuild and reconcile."""
        return self._index.intact()

    def story_ids(self) -> list[int]:
        """The stories held (those with an article in the window)."""
        return list(self._stories)

    def reconcile_index(self) -> tuple[int, int]:
        """Make a shared index hold exactly the articles held here; (added, removed)."""
        if not self._index.shared:
            return 0, 0
        self._index.pin()
        present = self._index.keys()
        extra = [key for key in present if key not in self._articles]
        missing = [aid for aid in self._articles if aid not in present]
        for key in extra:
            self._index.remove(key)
        for aid in missing:
            self._index.insert(aid, self._articles[aid].sketch)
        return len(missing), len(extra)

    def add(self, prepared: Prepared, story_id: int, *, index: bool = True) -> None:
        """Commit the article into ``story_id`` (creating the story's state if needed).

        ``index=False`` leaves the candidate index alone (the article is already in a
        shared index: see the module docstring)."""
        doc = prepared.doc
        if doc.id in self._articles:
            raise ValueError(f"article {doc.id} is already indexed")
        t = prepared.time if prepared.time is not None else self._clock
        if t is None:
            t = 0.0  # no date seen yet anywhere: all undated articles are "at the same moment"
        if self._clock is None or t > self._clock:
            self._clock = t
        f = prepared.features
        # IDF as of now, including this article
        self._n += 1
        self._df.update(prepared.raw.keys())  # each term once (counted in C)
        self._version += 1
        vec = self._doc_vector(prepared, committed=True)
        story = self._stories.get(story_id)
        if story is None:
            story = self._stories[story_id] = _Story(story_id, t, t)
        story.first = min(story.first, t)
        story.last = max(story.last, t)
        if prepared.time is not None:
            pt = prepared.time
            story.dated = (
                (pt, pt) if story.dated is None else (min(story.dated[0], pt), max(story.dated[1], pt))
            )
        story.size += 1
        story.total_length += f.length
        spec = f.names | f.numbers
        if spec:
            story.specific_members += 1
            story.specifics.update(spec)
        story.norm2 = _add_into(story.centroid, vec, story.norm2)
        emb = prepared.emb
        if emb is not None:
            if story.sem is None:
                self._sem_row(story)[:] = emb
            else:
                story.sem += emb
            story.sem_n += 1
            if self._sem_sum is None:
                self._sem_sum = emb.astype(np.float64)
            else:
                self._sem_sum += emb
            self._sem_count += 1
        story.members.add(doc.id)
        self._recent.pop(story.tick, None)
        self._tick += 1
        story.tick = self._tick
        self._recent[story.tick] = story_id
        art = _Article(doc.id, story_id, t, vec, f.shingles, f.fingerprint, prepared.sketch, emb)
        self._articles[doc.id] = art
        self._fingerprints.setdefault(f.fingerprint, doc.id)
        if index:
            self._index.insert(doc.id, prepared.sketch, story_id)
        heapq.heappush(self._expiry, (t, doc.id))
        self._prune()

    def merge(self, into: int, others: Iterable[int]) -> None:
        """Fold the state of ``others`` into story ``into``."""
        target = self._stories.get(into)
        for other_id in others:
            if other_id == into:
                continue
            other = self._stories.pop(other_id, None)
            if other is None:
                continue
            if target is None:
                target = self._stories[into] = _Story(into, other.first, other.last)
            target.first = min(target.first, other.first)
            target.last = max(target.last, other.last)
            if other.dated is not None:
                d = target.dated
                target.dated = (
                    other.dated if d is None else (min(d[0], other.dated[0]), max(d[1], other.dated[1]))
                )
            target.size += other.size
            target.total_length += other.total_length
            target.specifics.update(other.specifics)
            target.specific_members += other.specific_members
            target.norm2 = _add_into(target.centroid, other.centroid, target.norm2)
            if other.sem is not None:
                if target.sem is None:
                    self._sem_row(target)[:] = other.sem
                else:
                    target.sem += other.sem
                target.sem_n += other.sem_n
                self._sem_free.append(other.row)
            if other.tick > target.tick:
                # the survivor takes the place of the more recently joined fragment (as if all
                # of ``other``'s articles had been added to it: what a restore rebuilds)
                self._recent.pop(target.tick, None)
                self._recent[other.tick] = into
                target.tick = other.tick
            else:
                self._recent.pop(other.tick, None)
            for aid in other.members:
                a = self._articles.get(aid)
                if a is not None:
                    a.story = into
                    self._index.relabel(aid, into)
            target.members |= other.members

    def assign(self, doc: Document, new_story_id: Callable[[], int]) -> tuple[Decision, int]:
        prepared = self.prepare(doc)
        decision = self.decide(prepared)
        story_id = decision.story_id if decision.story_id is not None else new_story_id()
        if decision.merge:
            self.merge(story_id, decision.merge)
        self.add(prepared, story_id)
        return decision, story_id

    def restore(
        self,
        doc: Document,
        story_id: int,
        signature: bytes | None = None,
        params: str | None = None,
        *,
        transient: bool = False,
    ) -> None:
        """Re-add a stored article (oldest first) without deciding.

        ``story_id`` must be the article's current story (after any merges). The stored
        ``signature`` is used when it was made with this configuration (``params`` equal
        to :meth:`ClusterSettings.signature_params`, or omitted) and has the right size;
        otherwise the sketch is recomputed.

        ``transient``: the caller knows that this article, and every other article of its
        story it restores, is older than the window by the end of the restore (so they are
        pruned before anything can read them). Only what outlives such an article is then
        made: its terms count for IDF while it is held, and its fingerprint is held for
        that time (an earlier article keeps a fingerprint until it leaves); its weighted
        vector, embedding, sketch and story are not. The state at the end of the restore
        is the one the plain restore gives; :meth:`bulk_restore` checks that none is
        still held.
        """
        self.restore_many([RestoreItem(doc, story_id, signature, params, transient)])

    def restore_many(
        self,
        items: Sequence[RestoreItem],
        *,
        workers: int = 0,
        min_parallel: int = 20_000,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """:meth:`restore` of each item, in order (a rebuild).

        The per-article work that reads no state (text features, term weights, embeddings,
        any sketch to recompute) is done in chunks, shared with ``workers`` helper
        processes when there are at least ``min_parallel`` items
        (:func:`parallel.ordered_map`); the state is then changed here, in order, exactly
        as one :meth:`restore` after another would. ``on_progress(1)`` after each item.
        """
        s = self.settings
        spec = _RestoreSpec(s.title_weight, s.name_weight, s.semantic, self._params)
        current = s.signature_params()
        kinds = [self._restore_kind(it, current) for it in items]
        size = _RESTORE_CHUNK
        starts = range(0, len(items), size)
        chunks = [
            (
                spec,
                [
                    (it.doc.title, it.doc.text, k)
                    for it, k in zip(items[i : i + size], kinds[i : i + size], strict=True)
                ],
            )
            for i in starts
        ]
        index = not (self._index.shared or self._bulk)
        large = len(items) >= min_parallel
        with gc_paused() if large else contextlib.nullcontext():
            parts = parallel.ordered_map(_restore_parts, chunks, workers if large else 0)
            for i, (done, vecs) in zip(starts, parts, strict=True):
                for it, kind, part in zip(items[i : i + size], kinds[i : i + size], done, strict=True):
                    if kind == _TRANSIENT:
                        self._add_transient(it.doc, it.story_id, *part)
                    else:
                        f, raw, row, blob = part
                        emb = vecs[row] if row >= 0 else None  # a view: the chunk's array is read only
                        sketch = self._sketcher.from_bytes(it.signature if kind == _SIGNED else blob)
                        t = it.doc.published.timestamp() if it.doc.published is not None else None
                        self.add(Prepared(it.doc, f, sketch, t, raw, emb), it.story_id, index=index)
                    if on_progress is not None:
                        on_progress(1)

    def _restore_kind(self, it: RestoreItem, current: str) -> int:
        """What restoring ``it`` needs computed: its terms only (transient), everything but
        the sketch (its stored signature fits this configuration), or everything."""
        if it.transient:
            return _TRANSIENT
        usable = it.signature is not None and (it.params is None or it.params == current)
        return _SIGNED if usable and self._sketcher.fits(it.signature) else _UNSIGNED  # type: ignore[arg-type]

    @contextlib.contextmanager
    def bulk_restore(self) -> Iterator[None]:
        """Restore many articles (a rebuild): the in-process index is built once at the
        end, from the articles still held, in one sort of every band key
        (:meth:`CandidateIndex.insert_many`), instead of one insert per article, which a
        restore of two windows would mostly remove again. Raises :class:`RestoreError` at
        the end when an article restored ``transient`` is still held (the caller's
        promise was wrong: restore again without it)."""
        if self._bulk:
            raise RuntimeError("bulk_restore is not reentrant")
        self._bulk = True
        try:
            yield
        finally:
            self._bulk = False
        if self._transient:
            raise RestoreError(f"{self._transient} articles restored as transient are still held")
        if not self._index.shared:
            held = list(self._articles.values())
            self._index.insert_many(((a.id, a.sketch) for a in held), labels=[a.story for a in held])

    def _add_transient(
        self, doc: Document, story_id: int, shingles: frozenset[str], fingerprint: int
    ) -> None:
        """:meth:`add` of an article restored ``transient`` (its :func:`extract_terms`):
        the same counts, clock, tick, fingerprint and expiry, nothing else."""
        if doc.id in self._articles:
            raise ValueError(f"article {doc.id} is already indexed")
        t = doc.published.timestamp() if doc.published is not None else self._clock
        if t is None:
            t = 0.0
        if self._clock is None or t > self._clock:
            self._clock = t
        self._n += 1
        self._df.update(shingles)  # the raw vector's terms (see _prepare)
        self._version += 1
        self._tick += 1
        self._transient += 1
        self._articles[doc.id] = _Article(doc.id, story_id, t, {}, shingles, fingerprint, None)
        self._fingerprints.setdefault(fingerprint, doc.id)
        heapq.heappush(self._expiry, (t, doc.id))
        self._prune()

    # ------------------------------------------------------------------ scoring

    def score_candidates(
        self, prepared: Prepared, hits: list[Any] | None = None, *, recent: bool = False
    ) -> list[dict[str, Any]]:
        """Every candidate story with its evidence, score and threshold (for decide and analysis).

        ``recent`` adds the second, semantic-only source (see :meth:`decide`)."""
        if hits is None:
            hits = self._index.query(prepared.sketch)
        held = [a for a in map(self._articles.get, hits) if a is not None]
        cands = self._candidates(prepared, _ranked(Counter([a.story for a in held])))
        if recent:
            cands += self._recent_candidates(prepared, cands)
        return self._with_semantic(prepared, self._lexical(prepared, cands), every=recent)

    def _candidates(
        self, prepared: Prepared, ranked: Iterable[tuple[int, int]]
    ) -> list[tuple[int, int, float]]:
        """(hits, story, time gap) of the first max_candidates stories of ``ranked`` ((hits,
        story) pairs, most hits first, then the lowest id) still inside the window: their
        time gaps are worked out only as far as needed."""
        s = self.settings
        t = prepared.time if prepared.time is not None else self._clock
        cands: list[tuple[int, int, float]] = []
        window = self._window
        stories = self._stories
        limit = s.max_candidates
        if not limit:
            return cands
        for n, sid in ranked:
            st = stories[sid]
            gap = 0.0  # _gap, inline: max(0.0, st.first - t, t - st.last)
            if t is not None:
                if st.first - t > gap:
                    gap = st.first - t
                if t - st.last > gap:
                    gap = t - st.last
            if gap <= window:
                cands.append((n, sid, gap))
                if len(cands) == limit:
                    break
        return cands

    def _recent_candidates(
        self, prepared: Prepared, cands: list[tuple[int, int, float]]
    ) -> list[tuple[int, int, float]]:
        """The second source of candidates: the stories joined most recently that are not in
        ``cands``, ranked by embedding cosine (articles that share almost no word with their
        story are not LSH hits); (0, story, time gap) like :meth:`_candidates`."""
        s = self.settings
        emb = prepared.emb
        out: list[tuple[int, int, float]] = []
        if emb is None or s.semantic_recent <= 0 or s.semantic_top <= 0:
            return out
        t = prepared.time if prepared.time is not None else self._clock
        have = {sid for _, sid, _ in cands}
        latest = map(
            self._stories.__getitem__, itertools.islice(reversed(self._recent.values()), s.semantic_recent)
        )
        recent = [st for st in latest if st.row and st.id not in have]  # row 0: no embedding
        if recent:
            sims = self._semantic(emb, recent)
            k = min(s.semantic_top, len(recent))
            for j in np.argsort(-sims, kind="stable")[:k]:
                st = recent[int(j)]
                gap = _gap(st, t)
                if gap <= self._window:
                    out.append((0, st.id, gap))
        return out

    def _lexical(self, prepared: Prepared, cands: list[tuple[int, int, float]]) -> list[dict[str, Any]]:
        """The candidates scored on words: :meth:`score_candidates` before the embeddings
        (``sem`` 0, the threshold not raised by the semantic floor).

        This runs for up to ``max_candidates`` stories an article, so everything that does
        not depend on the story is worked out once, before the loop, and the ``min``/``max``
        of the formulas are spelled out as comparisons that pick the same operand (no
        builtin call); the arithmetic is the same, in the same order, so the scores and
        thresholds are bit for bit those of the plain formulas. The same-time bonus is
        skipped when it is 0: its factor is then exactly 1 (``1 - 0 * exp(..)``)."""
        if not cands:
            return []
        s = self.settings
        stories = self._stories
        vec = self._doc_vector(prepared)
        f = prepared.features
        length = f.length
        base = min(s.join_cap, max(s.join_floor, s.join_scale * math.sqrt(length)))
        pt = prepared.time
        spec = f.names | f.numbers
        bonus = s.same_time_bonus
        same_time = s.same_time_hours * 3600.0
        penalty = s.time_penalty
        window = self._window
        # the names/numbers test only matters when it moves the threshold (off by default)
        conflicts = s.conflict_factor != 1.0
        min_shared = min(s.min_shared, len(vec))
        never = 1.0 + 1e-9  # a threshold no cosine reaches
        sqrt = math.sqrt
        exp = math.exp
        out = []
        terms = tuple(vec)
        for n, sid, gap in cands:
            st = stories[sid]
            centroid = st.centroid
            # the terms the story shares, in the article's order (found in C: most are not
            # shared), then the same products summed in the same order as over every term
            common = list(filter(centroid.__contains__, terms))
            dot = 0.0
            for term in common:
                dot += vec[term] * centroid[term]
            shared = len(common)
            norm2 = st.norm2
            c = dot / sqrt(norm2) if norm2 > 0 else 0.0  # the article's vector is a unit vector
            threshold = base
            dated = st.dated
            if pt is not None and dated is not None:
                dgap = 0.0  # max(0.0, dated[0] - pt, pt - dated[1])
                if dated[0] - pt > dgap:
                    dgap = dated[0] - pt
                if pt - dated[1] > dgap:
                    dgap = pt - dated[1]
                if bonus:
                    threshold *= 1.0 - bonus * exp(-dgap / same_time)
                threshold *= 1.0 + penalty * dgap / window
            conflict = conflicts and self._conflict(spec, st)
            if conflict:
                threshold *= s.conflict_factor
            if (shared < min_shared or n == 0) and never > threshold:  # max(threshold, never)
                # one shared word is not evidence of one event; a story proposed by its
                # embedding only is for the semantic rule alone
                threshold = never
            score = c if c > 0.0 else 0.0  # min(1.0, max(0.0, c))
            if score >= 1.0:
                score = 1.0
            out.append(
                {
                    "story": sid,
                    "hits": n,
                    "gap_h": gap / 3600.0,
                    "cos": c,
                    "size": st.size,
                    "shared": shared,
                    "conflict": conflict,
                    "length": length,
                    "score": score,
                    "threshold": threshold,
                    "sem": 0.0,
                }
            )
        return out

    def _with_semantic(
        self, prepared: Prepared, lexical: list[dict[str, Any]], every: bool
    ) -> list[dict[str, Any]]:
        """:meth:`_lexical`'s candidates with their embedding cosines, where they can change
        the outcome: ``every`` candidate when the semantic rule may decide (``recent``), else
        those near enough on words to be joined or bridged (the floor and the bridge rule);
        fewer numpy calls per article. A candidate given its cosine is a new dict: ``lexical``
        is left as it was (decide scores it again with the recent stories)."""
        out = list(lexical)
        emb = prepared.emb
        if emb is None:
            return out
        s = self.settings
        need = (
            range(len(out))
            if every
            else [i for i, c in enumerate(out) if c["score"] >= s.merge_ratio * c["threshold"]]
        )
        if need:
            stories = self._stories
            sims = self._semantic(emb, [stories[out[i]["story"]] for i in need])
            for i, x in zip(need, sims, strict=True):
                c = out[i] = {**out[i], "sem": float(x)}
                if x < s.semantic_floor:
                    # shared words, but it is about something else
                    c["threshold"] = max(c["threshold"], 1.0 + 1e-9)
        return out

    # ------------------------------------------------------------------ internals

    def _prepare(self, doc: Document, sketch: Sketch | None) -> Prepared:
        s = self.settings
        f, raw, emb = _features(doc.title, doc.text, s.title_weight, s.name_weight, self._embedder)
        if sketch is None:
            sketch = self._sketcher.sketch(sketch_terms(f))
        t = doc.published.timestamp() if doc.published is not None else None
        return Prepared(doc, f, sketch, t, raw, emb)

    def _idf(self, term: str, extra: int = 0) -> float:
        """Smoothed IDF over the articles held (+ ``extra`` for the article being scored)."""
        n = self._n + extra + self.settings.idf_prior_docs
        df = self._df.get(term, 0) + extra
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _conflict(self, spec: frozenset[str], st: _Story) -> bool:
        """Both sides are specific (names, numbers) and the specifics disagree.

        Two earthquakes, two arrests: same words, different places, people and magnitudes.
        The story's specifics are those at least half of its specific members have.
        """
        s = self.settings
        if len(spec) < s.conflict_min or st.specific_members == 0:
            return False
        half = st.specific_members / 2.0
        common = [t for t, k in st.specifics.items() if k >= half]
        if len(common) < s.conflict_min:
            return False
        union = spec.union(common)
        tot = sum(self._idf(t, 1) for t in union)
        inter = sum(self._idf(t, 1) for t in spec.intersection(common))
        return tot > 0 and inter / tot < s.conflict_overlap

    def _doc_vector(self, prepared: Prepared, committed: bool = False) -> Vector:
        """The article's unit TF-IDF vector, IDF counting the article itself.

        Before :meth:`add` that is IDF with one more document containing each of its
        terms; after add's counting it is the same numbers, so the vector scored in
        :meth:`decide` is reused (cached on the state version) instead of recomputed.
        """
        key = (prepared.doc.id, self._version - (1 if committed else 0))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        vec = self._weigh(prepared.raw, extra=0 if committed else 1)
        if not committed:
            self._cache = (key, vec)
        return vec

    def _weigh(self, raw: Vector, extra: int = 0) -> Vector:
        n = self._n + extra + self.settings.idf_prior_docs
        get = self._df.get
        log = math.log
        out = {}
        for term, w in raw.items():
            d = get(term, 0) + extra
            out[term] = w * log(1.0 + (n - d + 0.5) / (d + 0.5))
        return _unit(out)

    def _prune(self) -> None:
        if self._clock is None:
            return
        cutoff = self._clock - self._window
        heap = self._expiry
        while heap and heap[0][0] < cutoff:
            _, aid = heapq.heappop(heap)
            a = self._articles.pop(aid, None)
            if a is None:
                continue
            self._index.remove(aid)
            if self._fingerprints.get(a.fingerprint) == aid:
                del self._fingerprints[a.fingerprint]
            self._n -= 1
            self._version += 2
            if a.emb is not None:
                self._sem_count -= 1
                if self._sem_count:
                    self._sem_sum -= a.emb  # in place: the sum is no one else's (the mean is a new array)
                else:
                    self._sem_sum = None
            if a.sketch is None:
                self._transient -= 1
            df = self._df
            for term in a.shingles:  # the raw vector's terms, counted by add (a.vec has the same keys)
                k = df[term] - 1
                if k:
                    df[term] = k
                else:
                    del df[term]
            st = self._stories.get(a.story)
            if st is not None:
                st.members.discard(aid)
            if st is not None and st.last < cutoff:
                # every member is older than the window: the story can no longer be joined
                del self._stories[a.story]
                self._recent.pop(st.tick, None)
                if st.row:
                    self._sem_free.append(st.row)

    def snapshot(self) -> dict[str, Any]:
        """A comparable picture of the whole state (tests check restore equivalence with it)."""

        def r(v: Vector) -> dict[str, float]:
            return {k: round(x, 9) for k, x in sorted(v.items()) if abs(x) > 1e-12}

        return {
            "n": self._n,
            "clock": self._clock,
            "df": dict(sorted(self._df.items())),
            "fingerprints": dict(sorted(self._fingerprints.items())),
            "articles": {
                aid: (
                    a.story,
                    a.time,
                    r(a.vec),
                    sorted(a.shingles),
                    self._sketcher.to_bytes(a.sketch),
                    None if a.emb is None else a.emb.tobytes(),
                )
                for aid, a in sorted(self._articles.items())
            },
            "stories": {
                sid: (
                    st.first,
                    st.last,
                    st.dated,
                    st.size,
                    st.total_length,
                    r(st.centroid),
                    round(st.norm2, 9),
                    sorted(st.members),
                    dict(sorted(st.specifics.items())),
                    st.specific_members,
                    None if st.sem is None else [round(float(x), 7) for x in st.sem],
                    st.sem_n,
                )
                for sid, st in sorted(self._stories.items())
            },
            "expiry": sorted(self._expiry),
            "semantic": (
                None if self._sem_sum is None else [round(float(x), 7) for x in self._sem_sum],
                self._sem_count,
                list(self._recent.values()),
            ),
        }
