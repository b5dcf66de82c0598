"""Clustering settings and the plain records the clusterer takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from aggregator.config import Settings


@dataclass(frozen=True)
class ClusterSettings:
    """Every knob of the clusterer, with the one default configuration for all inputs.

    The first five map to the application settings (``cluster_window_hours``,
    ``lsh_num_perm``, ``lsh_seed``, ``lsh_scheme``, ``lsh_threshold``); the rest are the
    decision rule's constants, explained in ``docs/clustering.md``.
    """

    window_hours: float = 72.0  # a story is a candidate only if it had an article within this many hours
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"
    threshold: float = 0.1  # LSH Jaccard threshold (candidate generation only)

    # --- vectors
    title_weight: float = 2.0  # extra term weight for a word that is in the title
    name_weight: float = 1.0  # extra term weight for a word written as a name
    # pseudo-articles containing no term: keeps IDF (and the semantic centring) sane while the
    # window holds few articles; 120 rather than 60: small streams (a held-out half) vary less
    idf_prior_docs: float = 120.0
    # --- decision: join if cosine(article, story centroid) >= threshold, where
    # threshold = clip(join_scale * sqrt(distinct terms), join_floor, join_cap) * time factor
    join_scale: float = 0.022
    join_floor: float = 0.05
    join_cap: float = 0.40
    conflict_min: int = 2  # names/numbers each side needs before they can disagree ...
    conflict_overlap: float = 0.1  # ... IDF-weighted overlap below which they do ...
    conflict_factor: float = 1.0  # ... and then the threshold is multiplied by this (1.0: off, see docs)
    min_shared: int = 2  # distinct words the article must share with the story (fewer if it has fewer)
    # threshold x (1 - bonus * exp(-gap / same_time_hours)) when both are dated; off (see docs)
    same_time_bonus: float = 0.0
    same_time_hours: float = 12.0
    time_penalty: float = 1.0  # threshold x (1 + penalty * gap / window) when both are dated
    merge_ratio: float = (
        0.8  # an article proposes merging another story when it comes this close to its threshold ...
    )
    merge_threshold: float = 0.6  # ... and the two stories' centroids have at least this cosine
    merge_scale: float = 0.065  # (or merge_scale * sqrt(mean distinct terms of their articles), if lower)
    copy_jaccard: float = 0.8  # term-set Jaccard above which an article is a near-exact copy
    copy_min_terms: int = 4  # fewer distinct terms: only identical texts count as copies
    max_candidates: int = 30  # candidate stories scored per article (most LSH hits first)
    # --- semantic signal (WordLlama sentence embeddings; aggregator/cluster/semantic.py, docs)
    semantic: bool = True  # compute embeddings at all (False: lexical only, wordllama never loaded)
    semantic_center: bool = True  # cosines relative to the mean embedding of the articles held
    semantic_floor: float = 0.15  # below this cosine a story can be neither joined nor proposed for a merge
    semantic_bridge: float = 0.2  # a merge proposal needs this cosine between article and other story
    semantic_story: float = 0.15  # ... and a lexical merge this cosine between the two stories
    semantic_scale: float = 0.17  # semantic join when nothing passes on words: cosine >= this x sqrt(L)
    semantic_merge: float = 0.3  # semantic bridge: story-story cosine to merge another close story
    semantic_recent: int = 100  # semantic join: also score this many most recently joined stories ...
    semantic_top: int = 5  # ... the best this many of them by cosine become (semantic-only) candidates

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterSettings:
        return cls(
            window_hours=float(settings.cluster_window_hours),
            num_perm=int(settings.lsh_num_perm),
            seed=int(settings.lsh_seed),
            scheme=str(settings.lsh_scheme),
            threshold=float(settings.lsh_threshold),
        )

    def signature_params(self) -> str:
        """Tag stored beside each signature; signatures with another tag are recomputed."""
        return f"{self.scheme}:{self.seed}:{self.num_perm}"

    def replace(self, **changes: object) -> ClusterSettings:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unknown cluster settings: {sorted(unknown)}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ClusterSettings(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Document:
    """Plain input of the clusterer (no HTML)."""

    id: int  # article id (unique)
    title: str
    text: str  # plain-text body; may equal the title (headline only) or be ""
    published: datetime | None  # tz-aware UTC; None = unknown ("at the same moment")
    source: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Decision:
    story_id: int | None  # existing story to join, or None = start a new story
    score: float  # the similarity that decided (0..1), 1.0 for copies
    signal: str  # which rule decided: "copy", "similar", "semantic", "new", "empty"
    copy_of: int | None  # id of the earlier article this one is a (near-)exact copy of
    merge: tuple[int, ...] = ()  # other story ids this article bridges, to be merged INTO story_id
