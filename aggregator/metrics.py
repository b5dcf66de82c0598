"""Prometheus metrics (prometheus-client lives here and nowhere else).

Two kinds:

* process counters and histograms, moved by the pipeline as it works
  (fetches, ticks, articles, stories, web requests) and kept in
  :data:`REGISTRY`;
* figures read from the database at scrape time (:class:`StorageCollector`:
  feeds in error, articles per story, last successful tick), so that every
  process reports the same truth whichever one did the work.

``render(storage)`` produces the text exposition format for ``GET /metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # pragma: no cover
    from aggregator.storage import Storage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

FETCHES = Counter(
    "aggregator_fetches_total",
    "Feed fetches by outcome (ok, not_modified, error) and HTTP status (0 when there was none).",
    ["outcome", "status"],
    registry=REGISTRY,
)
FETCH_SECONDS = Histogram(
    "aggregator_fetch_seconds",
    "Time to fetch, parse and store one feed.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "aggregator_tick_seconds",
    "Duration of one scheduler tick (update due feeds, then cluster).",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
TICKS = Counter("aggregator_ticks_total", "Scheduler ticks by outcome.", ["outcome"], registry=REGISTRY)
ARTICLES = Counter(
    "aggregator_articles_ingested_total", "Articles stored, by kind (new, updated).", ["kind"], registry=REGISTRY
)
STORIES_CREATED = Counter("aggregator_stories_created_total", "Stories created.", registry=REGISTRY)
STORIES_MERGED = Counter("aggregator_stories_merged_total", "Stories merged into another.", registry=REGISTRY)
ARTICLES_CLUSTERED = Counter(
    "aggregator_articles_clustered_total", "Articles assigned to a story, by signal.", ["signal"], registry=REGISTRY
)
INDEX_ENTRIES = Gauge(
    "aggregator_index_entries", "Articles held in this process's clustering index.", registry=REGISTRY
)
CLUSTERING_LEADER = Gauge(
    "aggregator_clustering_leader",
    "1 while this process is the clustering leader (it runs the clustering passes), else 0.",
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "aggregator_http_requests_total",
    "Web requests by route (the URL rule, not the path), method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "aggregator_http_request_seconds",
    "Web request duration by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)

_STORY_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100)


class StorageCollector(Collector):
    """Figures read from the database when ``/metrics`` is scraped."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        stats = self.storage.metrics_snapshot()
        yield GaugeMetricFamily("aggregator_feeds", "Subscribed feeds.", value=stats["feeds"])
        yield GaugeMetricFamily(
            "aggregator_feeds_in_error", "Feeds whose last fetch failed.", value=stats["feeds_in_error"]
        )
        yield GaugeMetricFamily("aggregator_articles", "Stored articles.", value=stats["articles"])
        yield GaugeMetricFamily("aggregator_stories", "Live stories.", value=stats["stories"])
        sizes: dict[int, int] = stats["story_sizes"]
        buckets = []
        for bound in _STORY_BUCKETS:
            buckets.append((str(bound), sum(n for size, n in sizes.items() if size <= bound)))
        buckets.append(("+Inf", sum(sizes.values())))
        yield HistogramMetricFamily(
            "aggregator_articles_per_story",
            "Live stories by number of articles.",
            buckets=buckets,
            sum_value=sum(size * n for size, n in sizes.items()),
        )
        leaders = self.storage.clustering_leaders()
        if leaders is not None:  # PostgreSQL: is some worker clustering? (SQLite: the one process is)
            yield GaugeMetricFamily(
                "aggregator_clustering_leaders",
                "Processes holding the clustering leader's lock (any process; 0 means nobody clusters).",
                value=leaders,
            )
        last: datetime | None = stats["last_tick_at"]
        yield GaugeMetricFamily(
            "aggregator_last_successful_tick_timestamp_seconds",
            "Unix time of the last tick that completed (any process).",
            value=last.timestamp() if last else 0.0,
        )


def render(storage: Storage) -> bytes:
    """The exposition text: process metrics, then the database's figures."""
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(StorageCollector(storage))
    return generate_latest(REGISTRY) + generate_latest(snapshot)
