"""One feed update end to end, and the clustering pass that follows.

The pipeline reads top to bottom::

    fetch (aggregator.fetch) -> parse/normalise (aggregator.parse)
        -> store (Storage.save_entries) -> cluster (cluster_pending)

Decisions are pure functions of data and ``now`` (:func:`success_state`,
:func:`error_state`, built on the polling rules of ``aggregator.politeness``); the rest is a
thin shell that does the I/O. Every feed's outcome is recorded on the feed
(last error, error count, back-off) and never stops the others: a broken
feed gets a clear error and nothing already stored is touched, because a
feed's entries and its new state are written in one transaction.

Clustering runs over articles stored but not yet clustered ("pending"), in
arrival order (published, then id), in one transaction per pass. Several
processes may cluster against one database (the daemon and a CLI command,
or many workers): passes are serialised by ``Storage.lock_clustering``, and
each pass first compares the database's *cluster generation* with the one
this process last wrote; when another process clustered in between, it
catches up with the articles clustered since (or rebuilds from the stored
signatures after a split, an operator's merge or a purge). Due feeds are
claimed for a lease (``Storage.claim_due_feeds``) so that no two workers
fetch one feed at once. See docs/design.md, "Several processes, one index".

In the daemon only one worker at a time clusters: the *clustering leader*
(:class:`Leadership`, a session-level advisory lock); the others fetch and
store, and their articles wait as pending for the leader's next pass
(:func:`cluster_if_leader`). Leadership only saves work: the pass lock and the
catch-up above keep two leaders at once (a failover) correct.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from aggregator import fetch as fetch_module
from aggregator import metrics, politeness
from aggregator import parse as parse_module
from aggregator.cluster import Clusterer, ClusterSettings, Document, RestoreError, RestoreItem, gc_paused
from aggregator.config import Settings
from aggregator.logs import event
from aggregator.models import (
    Article,
    ClusteredText,
    Feed,
    FeedState,
    FetchResult,
    ParsedFeed,
    UpdateReport,
)
from aggregator.storage import Storage, StorageUnavailableError
from aggregator.storage.facade import Assignment, StoredSignature
from aggregator.text import collapse_ws, strip_controls, truncate

log = logging.getLogger(__name__)

Fetcher = Callable[..., FetchResult]

# Storage holds validators up to these lengths; longer ones are not kept (the
# feed is then fetched unconditionally, which is only slower).
MAX_ETAG_LENGTH = 1024
MAX_LAST_MODIFIED_LENGTH = 255
MAX_ERROR_LENGTH = 500  # characters of a feed's last_error


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- pure decisions


def bounds(feed: Feed, settings: Settings) -> politeness.Bounds:
    """The polling bounds of ``feed``: its own min/max interval where set, else the settings'."""
    return politeness.feed_bounds(
        settings.default_interval,
        settings.min_interval,
        settings.max_interval,
        feed_minimum=feed.min_interval,
        feed_maximum=feed.max_interval,
    )


def hints(parsed: ParsedFeed) -> politeness.Hints:
    """The polling hints a document gives (``<ttl>``, skipHours/Days, ``sy:``)."""
    return politeness.Hints(
        ttl_minutes=parsed.ttl_minutes,
        skip_hours=politeness.parse_skip_hours(parsed.skip_hours),
        skip_days=politeness.parse_skip_days(parsed.skip_days),
        update_period=parsed.update_period,
        update_frequency=parsed.update_frequency,
    )


def _validator(value: str | None, limit: int) -> str | None:
    """A validator worth storing: printable and not longer than storage holds."""
    if value is None or len(value) > limit or not value.isprintable():
        return None
    return value


def error_message(message: str) -> str:
    """A feed's ``last_error``: one line, no control characters, bounded length."""
    return truncate(collapse_ws(strip_controls(message)), MAX_ERROR_LENGTH) or "unknown error"


def success_state(
    feed: Feed,
    result: FetchResult,
    parsed: ParsedFeed | None,
    settings: Settings,
    now: datetime,
) -> FeedState:
    """The feed's state after a 200 (``parsed`` is the document) or a 304
    (``parsed`` is None: the hints of the last document still apply)."""
    if parsed is not None:
        document_hints = hints(parsed)
        kept_hints = politeness.hints_to_json(document_hints)
    else:
        document_hints = politeness.hints_from_json(feed.poll_hints)
        kept_hints = feed.poll_hints
    next_check_at = politeness.next_check_after_success(bounds(feed, settings), document_hints, result.headers, now)
    etag = result.etag if result.etag is not None else feed.etag
    last_modified = result.last_modified if result.last_modified is not None else feed.last_modified
    return FeedState(
        etag=_validator(etag, MAX_ETAG_LENGTH),
        last_modified=_validator(last_modified, MAX_LAST_MODIFIED_LENGTH),
        last_fetched_at=now,
        last_success_at=now,
        next_check_at=next_check_at,
        error_count=0,
        last_error=None,
        title=(parsed.title if parsed is not None else None) or None,
        site_url=(parsed.link if parsed is not None else None) or None,
        url=result.permanent_redirect,
        stopped=None,
        poll_hints=kept_hints,
    )


def error_state(
    feed: Feed,
    message: str,
    settings: Settings,
    now: datetime,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> FeedState:
    """The feed's state after a failed update. ``status`` and ``headers`` are the
    HTTP answer's, when there was one: exponential back-off with jitter, at
    least the server's ``Retry-After`` on 429/503; ``410 Gone`` stops polling."""
    count = feed.error_count + 1
    wait = politeness.error_wait(status, headers or {}, now)
    next_check_at = politeness.next_check_after_error(feed.id, count, bounds(feed, settings), now, wait=wait)
    if wait is not None:
        message = f"{message}; the server asked to wait {_duration(wait)}"
    stopped = politeness.stop_reason(status)
    if stopped is not None:
        message = f"{message}; polling stopped"
    stopped = stopped or feed.stopped
    return FeedState(
        etag=feed.etag,
        last_modified=feed.last_modified,
        last_fetched_at=now,
        last_success_at=feed.last_success_at,
        next_check_at=next_check_at,
        error_count=count,
        last_error=error_message(message),
        stopped=stopped,
        poll_hints=feed.poll_hints,
    )


def _duration(seconds: float) -> str:
    """``3600`` -> ``"3600 s (1 h)"``, for error messages."""
    whole = int(seconds)
    if whole >= 86400:
        return f"{whole} s ({whole / 86400:.3g} d)"
    if whole >= 3600:
        return f"{whole} s ({whole / 3600:.3g} h)"
    return f"{whole} s"


# --------------------------------------------------------------------------- one feed


@dataclass
class _Fetched:
    feed: Feed
    started: float
    fetched_at: datetime
    result: FetchResult | None = None
    parsed: ParsedFeed | None = None
    error: str | None = None
    status: int | None = None  # HTTP status of the answer, when there was one
    headers: dict[str, str] = field(default_factory=dict)  # of an HTTP error answer


def _fetch_and_parse(feed: Feed, settings: Settings, fetcher: Fetcher, now: datetime) -> _Fetched:
    """Network and CPU work of one update; touches no database."""
    outcome = _Fetched(feed=feed, started=time.perf_counter(), fetched_at=now)
    try:
        outcome.result = fetcher(
            feed.url,
            etag=feed.etag,
            last_modified=feed.last_modified,
            timeout=settings.fetch_timeout,
            max_bytes=settings.max_feed_bytes,
            user_agent=settings.user_agent,
            allow_private=settings.allow_private,
            allow_files=settings.allow_file_urls,
        )
        if outcome.result.not_modified or outcome.result.body is None:
            return outcome
        outcome.parsed = parse_module.parse_feed(
            outcome.result.body,
            url=outcome.result.url,
            headers=outcome.result.headers,
            now=now,
            max_entries=settings.max_entries_per_feed,
        )
    except fetch_module.FetchError as exc:
        outcome.error = exc.message
        outcome.status = getattr(exc, "status", None)
        outcome.headers = dict(getattr(exc, "headers", None) or {})
    except parse_module.ParseError as exc:
        outcome.error = exc.message
    except Exception as exc:  # a bug or an input nobody foresaw: record it, keep going
        log.exception("unexpected error updating feed %s", feed.url)
        outcome.error = f"internal error: {type(exc).__name__}: {exc}"[:500]
    return outcome


def _reported(report: UpdateReport, status: int | None, warning: str | None = None) -> UpdateReport:
    """Log the one line of a feed fetch and count it."""
    metrics.FETCHES.labels(outcome=report.status, status=str(status or 0)).inc()
    metrics.FETCH_SECONDS.observe(report.seconds)
    if report.new:
        metrics.ARTICLES.labels(kind="new").inc(report.new)
    if report.updated:
        metrics.ARTICLES.labels(kind="updated").inc(report.updated)
    fields: dict[str, object] = {"feed": report.feed_id, "url": report.url, "outcome": report.status,
                                 "status": status}
    if report.status == "ok":
        fields.update(new=report.new, updated=report.updated, unchanged=report.unchanged)
    if report.error:
        fields["error"] = report.error
    if warning:
        fields["warning"] = warning
    fields["seconds"] = report.seconds
    event(log, "fetch", logging.WARNING if report.status == "error" else logging.INFO, **fields)
    return report


def _store_error(
    storage: Storage, feed: Feed, message: str, settings: Settings, now: datetime, seconds: float,
    status: int | None = None, headers: Mapping[str, str] | None = None,
) -> UpdateReport:
    state = error_state(feed, message, settings, now, status=status, headers=headers)
    storage.save_feed_state(feed.id, state)
    return _reported(UpdateReport(feed.id, feed.url, "error", error=state.last_error, seconds=seconds), status)


def _store(storage: Storage, outcome: _Fetched, settings: Settings) -> UpdateReport:
    feed, now = outcome.feed, outcome.fetched_at
    seconds = time.perf_counter() - outcome.started
    if outcome.error is not None:
        return _store_error(storage, feed, outcome.error, settings, now, seconds, outcome.status, outcome.headers)
    assert outcome.result is not None
    status = outcome.result.status
    if outcome.parsed is None:  # 304 Not Modified (or an empty body we were told not to parse)
        storage.save_feed_state(feed.id, success_state(feed, outcome.result, None, settings, now))
        return _reported(UpdateReport(feed.id, feed.url, "not_modified", seconds=seconds), status)
    parsed = outcome.parsed
    source = parsed.title or feed.title or _host(feed.url)
    try:
        with storage.batch():  # entries and feed state commit together, or not at all
            counts = storage.save_entries(feed.id, parsed.entries, source=source, fetched_at=now)
            storage.save_feed_state(feed.id, success_state(feed, outcome.result, parsed, settings, now))
    except Exception as exc:
        # The transaction rolled back: nothing of this feed was written. If the
        # database still takes writes, the problem is this feed's data (a value
        # the database refuses, a race with another process): record it on the
        # feed and go on with the others, rather than fail every pass on it.
        # If it takes no writes either, the database itself is unavailable:
        # the original error ends the pass (the tick retries later).
        message = f"cannot store entries: {exc}"
        if not isinstance(exc, StorageUnavailableError):
            log.exception("unexpected error storing feed %s", feed.url)
            message = f"internal error storing entries: {type(exc).__name__}: {exc}"
        try:
            return _store_error(storage, feed, message, settings, now, seconds, status)
        except StorageUnavailableError:
            raise exc from None
    report = UpdateReport(
        feed.id, feed.url, "ok", new=counts.new, updated=counts.updated,
        unchanged=counts.unchanged, seconds=seconds,
    )
    return _reported(report, status, parsed.warning)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or url


def update_feed(
    storage: Storage,
    feed: Feed,
    settings: Settings,
    *,
    now: datetime | None = None,
    fetcher: Fetcher = fetch_module.fetch,
) -> UpdateReport:
    """Fetch, parse and store one feed; record its outcome on the feed."""
    outcome = _fetch_and_parse(feed, settings, fetcher, now or utcnow())
    return _store(storage, outcome, settings)


def update_feeds(
    storage: Storage,
    feeds: Iterable[Feed],
    settings: Settings,
    *,
    fetcher: Fetcher = fetch_module.fetch,
    on_report: Callable[[UpdateReport], None] | None = None,
    stop: threading.Event | None = None,
) -> list[UpdateReport]:
    """Update several feeds: fetches run concurrently (``fetch_workers``),
    database writes one feed at a time as fetches complete.

    Once ``stop`` is set (the daemon is shutting down), no further fetch
    starts; fetches in flight finish (within ``fetch_timeout``) and are stored.
    Feeds not fetched keep their state and stay due.
    """
    reports: list[UpdateReport] = []
    feeds = list(feeds)
    if not feeds:
        return reports

    workers = min(settings.fetch_workers, len(feeds))
    with contextlib.ExitStack() as resources:
        if fetcher is fetch_module.fetch:
            # One client (connection pool, TLS context) for the whole pass rather
            # than one per fetch: keep-alive connections are reused between feeds
            # of one host. It enforces each fetch's own policy and deadline.
            client = resources.enter_context(fetch_module.make_client(max_connections=max(2, 2 * workers)))
            fetcher = functools.partial(fetch_module.fetch, client=client)
        run = fetcher

        def work(feed: Feed) -> _Fetched | None:
            if stop is not None and stop.is_set():
                return None
            return _fetch_and_parse(feed, settings, run, utcnow())

        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(work, feed) for feed in feeds]
            for future in as_completed(futures):
                outcome = future.result()
                if outcome is None:
                    continue
                report = _store(storage, outcome, settings)
                reports.append(report)
                if on_report is not None:
                    on_report(report)
    skipped = len(feeds) - len(reports)
    if skipped:
        event(log, "stopping", feeds_not_fetched=skipped, note="they stay due")
    return reports


# --------------------------------------------------------------------------- clustering


def document(article: Article) -> Document:
    """The clusterer's view of an article; an article whose feed gave no date is
    "at the same moment" as the stream (published None), not at its fetch time."""
    return Document(
        id=article.id,
        title=article.title,
        text=article.text or article.summary,
        published=article.published if article.dated else None,
        source=article.source,
        url=article.url,
    )


@dataclass
class ClusterReport:
    clustered: int = 0
    new_stories: int = 0
    joined: int = 0
    merges: int = 0
    rebuilt: bool = False
    caught_up: int = 0  # articles another process clustered, restored incrementally
    skipped: bool = False  # not this process's turn: the clustering leader clusters (see cluster_if_leader)
    signals: dict[str, int] = field(default_factory=dict)
    story_ids: set[int] = field(default_factory=set)  # stories created, joined or merged into
    seconds: float = 0.0


@dataclass
class ClusterEngine:
    """A process's clustering state: the in-memory (or Redis) index and the
    database generation it reflects. One per process; thread-safe."""

    settings: ClusterSettings
    storage_config: dict[str, object] | None = None
    # helper processes sharing a large rebuild's per-article work: the daemon passes its
    # rebuild_workers setting; 0 (in-process) by default for library use, since spawned helpers
    # import the caller's __main__ (multiprocessing's rule: scripts need a __main__ guard)
    rebuild_workers: int = 0
    clusterer: Clusterer = field(init=False)
    generation: int = field(default=-1, init=False)
    epoch: int = field(default=-1, init=False)  # see Storage.cluster_state
    merges: int = field(default=-1, init=False)
    seq: int = field(default=0, init=False)  # the last cluster_seq this engine holds
    lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.clusterer = Clusterer(self.settings, self.storage_config)

    def close(self) -> None:
        self.clusterer.close()

    def rebuild(self, storage: Storage, on_progress: Callable[[int], None] | None = None) -> int:
        """Load every stored article of the clustering window, oldest first.

        Two windows are read: the articles of the older one count for the IDF of the newer
        one's as they did when those were decided, and carry the stories still alive. The
        articles of an older-window story with no article in the newer one leave before
        the restore ends: they are restored ``transient`` (:meth:`Clusterer.restore`), which
        makes only their IDF counts and fingerprints. Should that turn out wrong (another
        process clustered into such a story meanwhile), the rebuild starts again without it.
        """
        latest = storage.latest_published()
        since = keep = cutoff = None
        if latest is not None:
            since = latest - timedelta(hours=self.settings.window_hours * 2)
            newest = storage.latest_published(dated_since=since)  # the restore's final clock
            if newest is not None:
                # older than the window at that clock (a second's margin for float rounding)
                cutoff = newest - timedelta(hours=self.settings.window_hours, seconds=1)
                keep = storage.window_stories(since, cutoff)
        try:
            return self._load(storage, since, keep, cutoff, on_progress)
        except RestoreError as exc:
            event(log, "rebuild", logging.WARNING, restart="without transient articles", reason=str(exc))
            return self._load(storage, since, None, None, on_progress)

    def _load(
        self,
        storage: Storage,
        since: datetime | None,
        keep: set[int] | None,
        cutoff: datetime | None,
        on_progress: Callable[[int], None] | None,
    ) -> int:
        """A fresh clusterer restored from the articles published since ``since``; those
        of stories not in ``keep`` (older than ``cutoff``) restored ``transient``."""
        self.clusterer.close()
        self.clusterer = clusterer = Clusterer(self.settings, self.storage_config)
        with gc_paused():  # the rows read and the state made are many long-lived objects
            items: list[RestoreItem] = []
            for row in storage.clustered_texts(since=since):
                transient = keep is not None and row.story_id not in keep
                if transient and (row.published is None or row.published >= cutoff):  # type: ignore[operator]
                    raise RestoreError(f"article {row.id} of story {row.story_id} is newer than planned")
                items.append(_item(row, transient=transient))
            with clusterer.bulk_restore():
                clusterer.restore_many(items, workers=self.rebuild_workers, on_progress=on_progress)
            clusterer.reconcile_index()  # a shared index: drop what expired, add what is missing
        return len(items)

    def catch_up(self, storage: Storage, merged: bool) -> int:
        """Follow what other processes clustered since this engine's last pass,
        without a rebuild: fold the held stories that were merged into their
        survivors (when ``merged``), then restore the articles clustered after
        ``seq`` with their current story ids, in ``cluster_seq`` order. The state
        is then the one a full rebuild gives (tests compare the snapshots)."""
        if merged:
            by_survivor: dict[int, list[int]] = {}
            for story_id, survivor in storage.survivors(self.clusterer.story_ids()).items():
                by_survivor.setdefault(survivor, []).append(story_id)
            for survivor, others in sorted(by_survivor.items()):
                self.clusterer.merge(survivor, sorted(others))
        items = [_item(row) for row in storage.clustered_texts(after_seq=self.seq)]
        self.clusterer.restore_many(items, workers=self.rebuild_workers)
        return len(items)


def _item(row: ClusteredText, *, transient: bool = False) -> RestoreItem:
    """A stored article to restore; a signature made with other LSH parameters is recomputed."""
    doc = Document(row.id, row.title, row.text, row.published, row.source, row.url)
    return RestoreItem(doc, row.story_id, row.hashvalues, row.params, transient)


def cluster_pending(
    storage: Storage,
    engine: ClusterEngine,
    *,
    now: Callable[[], datetime] = utcnow,
    batch_size: int = 1000,
) -> ClusterReport:
    """Assign every pending article to a story, in arrival order.

    The rule that decides is the clustering package's (``Clusterer.decide``);
    this function adds one rule of its own before it: an article whose
    canonical URL is already stored from another feed joins that article's
    story as its copy (signal ``same_url``).
    """
    report = ClusterReport()
    started = time.perf_counter()
    with engine.lock:
        try:
            _cluster_in_transaction(storage, engine, report, now, batch_size)
        except BaseException:
            # The transaction rolled back but the in-memory index may hold part of
            # the pass: force a rebuild from the database next time.
            engine.generation = -1
            raise
    report.seconds = time.perf_counter() - started
    metrics.STORIES_CREATED.inc(report.new_stories)
    metrics.STORIES_MERGED.inc(report.merges)
    for signal, count in report.signals.items():
        metrics.ARTICLES_CLUSTERED.labels(signal=signal).inc(count)
    metrics.INDEX_ENTRIES.set(len(engine.clusterer))
    if report.clustered or report.rebuilt or report.caught_up:
        event(
            log, "cluster", clustered=report.clustered, new_stories=report.new_stories,
            joined=report.joined, merges=report.merges, rebuilt=report.rebuilt,
            caught_up=report.caught_up, seconds=report.seconds,
        )
    return report


class Leadership:
    """Whether this process is the *clustering leader*: the one daemon worker that
    runs clustering passes while the others only fetch and store (see
    docs/design.md, "The clustering leader").

    Backed by :meth:`Storage.leader_lock` (a session-level advisory lock on a
    connection of its own): :meth:`check`, called at every tick, takes the
    leadership when it is free (the leader died, its connection dropped, or none
    was elected yet) and tells a leader whether it still is one. Changes are logged
    (``leader state=acquired|lost|released``) and shown by the
    ``aggregator_clustering_leader`` gauge. On SQLite the process is always the leader.
    """

    def __init__(self, storage: Storage):
        self._lock = storage.leader_lock()
        self.is_leader = False

    def check(self) -> bool:
        """True while this process leads (taking the leadership when it is free)."""
        held = self._lock.try_acquire()
        if held != self.is_leader:
            self.is_leader = held
            metrics.CLUSTERING_LEADER.set(1 if held else 0)
            event(log, "leader", logging.INFO if held else logging.WARNING,
                  state="acquired" if held else "lost", pid=os.getpid())
        return held

    def release(self) -> None:
        """Give the leadership up (on shutdown): another worker takes it at its next tick."""
        was = self.is_leader
        self._lock.release()
        self.is_leader = False
        if was:
            metrics.CLUSTERING_LEADER.set(0)
            event(log, "leader", state="released", pid=os.getpid())


def cluster_if_leader(
    storage: Storage,
    engine: ClusterEngine,
    leadership: Leadership | None,
    *,
    now: Callable[[], datetime] = utcnow,
    batch_size: int = 1000,
) -> ClusterReport:
    """Who clusters after a worker's fetches: the rule of the daemon's tick (and of
    ``benchmarks/scale_out.py``'s workers).

    With ``leadership`` None (one-shot commands: ``update``, ``run --once``) the
    process clusters, as every process may (passes are serialised and catch up).
    Otherwise only the clustering leader does (:meth:`Leadership.check`, which also
    takes a free leadership); another worker's report is empty with ``skipped``
    set, and its articles stay pending for the leader's next pass (a one-shot
    worker that must leave nothing pending passes None).
    """
    if leadership is None or leadership.check():
        return cluster_pending(storage, engine, now=now, batch_size=batch_size)
    return ClusterReport(skipped=True)


def _cluster_in_transaction(
    storage: Storage,
    engine: ClusterEngine,
    report: ClusterReport,
    now: Callable[[], datetime],
    batch_size: int,
) -> None:
    params = engine.settings.signature_params()
    # One transaction; the stories the pass touches are recomputed once, at its end
    # (and a merged story just before its merge), rather than at every write.
    with storage.deferred_story_refresh():
        storage.lock_clustering()  # one pass at a time across processes (a no-op on SQLite)
        state = storage.cluster_state()
        if state.generation != engine.generation or not engine.clusterer.index_intact():
            if engine.generation >= 0 and state.epoch == engine.epoch and engine.clusterer.index_intact():
                report.caught_up = engine.catch_up(storage, merged=state.merges != engine.merges)
            else:
                engine.rebuild(storage)
                report.rebuilt = True
            engine.epoch, engine.merges = state.epoch, state.merges
        clusterer = engine.clusterer
        new_stories = storage.new_stories()  # ids now, rows in bulk before the assignments
        while True:
            pending = storage.pending_articles(batch_size)
            if not pending:
                break
            by_url = {
                url: (found.id, found.story_id)
                for url, found in storage.articles_by_url(a.url for a in pending if a.url).items()
            }
            decided: list[Assignment] = []
            for article in pending:
                prepared = clusterer.prepare(document(article))
                same = by_url.get(article.url) if article.url else None
                if same is not None and same[1] is not None:
                    story_id: int | None = same[1]
                    score, signal, copy_of, merge = 1.0, "same_url", same[0], ()
                else:
                    decision = clusterer.decide(prepared)
                    story_id, score, signal = decision.story_id, decision.score, decision.signal
                    copy_of, merge = decision.copy_of, decision.merge
                if story_id is None:
                    story_id = new_stories.reserve(article, now=now())
                    report.new_stories += 1
                else:
                    report.joined += 1
                report.signals[signal] = report.signals.get(signal, 0) + 1
                report.story_ids.add(story_id)
                signature = StoredSignature(params, clusterer.signature(prepared))
                decided.append(Assignment(article.id, story_id, score, signal, copy_of, signature))
                clusterer.add(prepared, story_id)
                if article.url and article.url not in by_url:
                    by_url[article.url] = (article.id, story_id)
                if merge:
                    # Write what is decided so far, so that the merge moves it too.
                    new_stories.flush()
                    storage.record_assignments(decided, now=now())
                    decided = []
                    # Storage refuses merges that would undo an operator's split.
                    done = storage.merge_stories(story_id, merge, now=now())
                    if done:
                        clusterer.merge(story_id, done)
                        merged = set(done)
                        by_url = {u: (a, story_id if s in merged else s) for u, (a, s) in by_url.items()}
                        report.merges += len(done)
                report.clustered += 1
            new_stories.flush()
            storage.record_assignments(decided, now=now())
        if report.merges:
            engine.merges = storage.bump_cluster_merges()
        if report.clustered or report.rebuilt or report.caught_up:
            engine.generation = storage.bump_cluster_generation()
        engine.seq = storage.cluster_state().seq


# --------------------------------------------------------------------------- one pass


@dataclass
class PassReport:
    feeds: list[UpdateReport]
    cluster: ClusterReport


def run_pass(
    storage: Storage,
    engine: ClusterEngine,
    settings: Settings,
    *,
    all_feeds: bool = False,
    fetcher: Fetcher = fetch_module.fetch,
    on_report: Callable[[UpdateReport], None] | None = None,
    stop: threading.Event | None = None,
    before_cluster: Callable[[], None] | None = None,
    leadership: Leadership | None = None,
) -> PassReport:
    """Update the due feeds (or all of them), then cluster what arrived.

    ``before_cluster`` runs between the two (the demo's workers wait there for
    each other, so that the first pass clusters every demo feed at once).

    ``leadership`` (the daemon's): cluster only as the clustering leader, else
    leave the pending articles to it (:func:`cluster_if_leader`); None clusters.

    ``stop`` (see :func:`update_feeds`) lets a shutting-down daemon end the
    pass early; what was stored is still clustered.
    """
    if all_feeds:  # every feed still polled: a stopped one (410 Gone) waits for `feeds set --resume`
        feeds = [feed for feed in storage.list_feeds() if feed.stopped is None]
    else:  # claimed for a lease, so that several workers never fetch one feed at once
        feeds = storage.claim_due_feeds(utcnow(), settings.feeds_per_tick, lease_seconds=settings.feed_lease_seconds)
    reports = update_feeds(storage, feeds, settings, fetcher=fetcher, on_report=on_report, stop=stop)
    if not all_feeds and len(reports) < len(feeds):  # stopping: the feeds not reached stay due
        fetched = {report.feed_id for report in reports}
        storage.release_feeds([feed for feed in feeds if feed.id not in fetched])
    if before_cluster is not None:
        before_cluster()
    cluster_report = cluster_if_leader(storage, engine, leadership)
    return PassReport(feeds=reports, cluster=cluster_report)
