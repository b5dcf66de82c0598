"""Story clustering: one streaming pass, each article decided when it arrives.

Theory of operation
-------------------
1. **Features** (``features``): content terms of title and body (stop-words out, light
   stemming, numbers kept, possessives dropped), names (capitalised mid-sentence words in
   running text), numbers, and a 64-bit fingerprint of the normalised text.
2. **Candidates** (``sketch``, the only datasketch module): a 128-permutation MinHash of the
   article's term *set*, looked up in a banded ``MinHashLSH`` (threshold 0.1 -> 64 bands of
   2 rows). The hits are articles; their stories, restricted to those with an article within
   ``window_hours`` of this one, are the candidates (at most ``max_candidates``, most hits
   first). The cost depends on the number of colliding articles, not on the number of stories.
   LSH only proposes: it never decides.
3. **Copies**: an article whose fingerprint equals a held article's, or whose term set has
   Jaccard >= 0.8 with an LSH hit (>= 4 terms), is a copy: it joins that article's story with
   score 1.0 and ``copy_of`` set. No similarity threshold can split a copy from its original.
4. **Decision**: cosine between the article's TF-IDF vector and each candidate story's
   centroid (sum of its members' unit vectors). Terms weigh ``1 + log tf``, +2 when in the
   title, +1 when written as a name. IDF is counted over the articles held in the window,
   with 120 pseudo-articles as a prior so an almost empty stream does not make every shared
   word look rare. The article joins the best story that clears its threshold:

       threshold = clip(0.022 * sqrt(distinct terms), 0.05, 0.40)
                   * (1 + gap / window)        # both dated: the further apart, the more text needed

   and it must share at least 2 distinct terms with the story (one shared word is not
   evidence of one event). The square root makes the threshold adapt to text length:
   headlines (7 terms) need ~0.06, title+snippet (25) ~0.11, full articles (100+) ~0.22 and
   more - the per-file thresholds earlier measurements needed (0.05 / 0.1 / 0.25) on one curve.
   Undated articles are "at the same moment" (inside every window) and pay no time penalty.
   (A same-time *bonus*, ``same_time_bonus``, exists but is off: it lowered UCI precision
   and would merge unrelated items that feeds date with their fetch time.)
5. **Merges**: when the article also comes within 80 % of another candidate's threshold, it
   proposes merging that story into the chosen one; the merge happens only if the two
   centroids (the article included) have cosine >= min(0.6, 0.065 * sqrt(mean article length)),
   times the join rule's time factor (1 + gap / window) when both stories are dated (gap
   between their dated spans): fragments far apart in time need more agreement to be one event.
   This repairs the fragmentation that streaming causes (an event's first reports split
   before its vocabulary settles) while the story-to-story test keeps one bridging article
   from chaining two events.
6. **Semantic signal** (``semantic``; WordLlama's static token embeddings, shipped inside
   the ``wordllama`` wheel): each article's mean token vector, and per story the sum of its
   members' vectors. Cosines are *centred* on the mean vector of the articles held (shrunk
   towards 0 by the IDF prior's 120 pseudo-articles), so what every article shares is no
   evidence - the embedding's IDF. Four uses, each with its reason:

   * **floor**: a story whose embedding cosine to the article is below 0.15 can neither be
     joined nor proposed for a merge: the article shares words with it ("stocks", "SXSW")
     but is about something else;
   * **bridge**: a merge proposal also needs cosine >= 0.2 to the other story, and two
     lexically bridged stories merge only if their centroids' cosine is >= 0.15 (a big
     story and a small one that share a vocabulary, e.g. Snowden's SXSW talk and SXSW);
   * **semantic join** (signal ``semantic``): when no story passes the lexical rule, the
     story with the highest embedding cosine is joined if it reaches
     ``0.17 * sqrt(distinct terms)`` (0.45 for a 7-term headline; above 1, i.e. never, from
     ~35 terms: long texts give the words enough to go on, and two reports of *different*
     events of one kind mean nearly the same thing). Only then are the 100 most recently
     joined stories also scored (top 5 by embedding become semantic-only candidates): a
     headline that shares no word with its story is not an LSH hit. The joined story may
     absorb other candidates the article is as close to when their centroids agree
     (cosine >= 0.3);
   * nothing else: the lexical rule still decides whenever it can.

7. **State and pruning**: per article (held while within the window of the newest time seen)
   its unit vector, term set, fingerprint, sketch and embedding; per story its centroid and squared norm
   (kept incrementally), time span and counts. Articles older than ``window_hours`` before the
   newest time seen are removed from the LSH index and the IDF counts; a story goes when its
   last article does. Memory is therefore flat in a steady stream; copies of an article
   older than the window are not recognised as copies (they start or join a story normally).
   ``restore`` replays stored articles (arrival order, current story ids) through the same
   ``add`` as live operation, so the state after a restart equals the state without one
   (an article the caller knows will have left the window by the end is replayed only for
   its IDF counts and fingerprint, ``transient``: the same end state for less work).

Measured trade-offs (dev files, B-cubed F1; see docs/clustering.md for the full tables)
-----------------------------------------------------------------------------------
* final defaults: ECB+ 0.904, Google News 0.946, UCI 0.881, seeds correct (lexical only,
  ``semantic=False``: 0.906 / 0.947 / 0.840). The semantic signal costs ~0.3 s once per
  process (tokenizer + table) and roughly a third more CPU per article.
* without story merges recall collapses (gnews R 0.57): streaming fragments stories early.
* a single threshold without the length curve cannot serve headlines and full articles.
* the names/numbers *conflict* rule (raise the threshold when both sides name different
  people, places, figures) separates two same-day earthquakes in a tiny stream, but cost
  1-2 points on ECB+ (same-event reports mention other people too), so it is off by default
  (``conflict_factor=1.0``); IDF over a real stream does most of that work.
* UCI headlines reach the target only with the semantic signal, and narrowly: its gold
  stories are topical bursts (one story id per aggregator cluster, several sub-events each)
  and each burst falls within one minute; we did not exploit that timing artefact
  (minute-scale time bonuses would merge unrelated items fetched together in real feeds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ClusterSettings, Decision, Document

if TYPE_CHECKING:  # pragma: no cover
    from .clusterer import Clusterer, Prepared, RestoreError, RestoreItem, gc_paused

__all__ = [
    "ClusterSettings",
    "Clusterer",
    "Decision",
    "Document",
    "Prepared",
    "RestoreError",
    "RestoreItem",
    "gc_paused",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the settings, metrics or features loads no datasketch/numpy.
    if name in {"Clusterer", "Prepared", "RestoreError", "RestoreItem", "gc_paused"}:
        from . import clusterer

        return getattr(clusterer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
