"""Scale-out on the real servers: the pipeline on PostgreSQL, the shared Redis index,
racing workers, feed claims, advisory-locked migrations and the incremental catch-up."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.cli import subscribe_demo
from aggregator.cluster import Clusterer, ClusterSettings, Document
from aggregator.cluster.sketch import CandidateIndex, IndexMismatchError, SketchParams
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, cluster_pending, run_pass
from aggregator.models import ParsedEntry
from aggregator.storage import SchemaOutOfDateError, Storage, open_storage
from tests.conftest import NOW, upgrade_concurrently

_OPEN: list[Clusterer | CandidateIndex | ClusterEngine] = []


@pytest.fixture(autouse=True)
def _close_indexes() -> Iterator[None]:
    """Every Clusterer, index and engine a test opened gives back its Redis connections."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _opened(thing):  # type: ignore[no-untyped-def]
    _OPEN.append(thing)
    return thing


def _settings(url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=url, allow_private=True, allow_file_urls=True, fetch_workers=2)


def _engine(settings: Settings, config: dict[str, object] | None = None) -> ClusterEngine:
    return _opened(ClusterEngine(ClusterSettings.from_settings(settings), config))


def _upgrade(url: str) -> None:
    storage = Storage(url)
    storage.upgrade()
    storage.close()


def _stories(storage: Storage) -> set[frozenset[str]]:
    return {frozenset(a.url or "" for a in item.articles) for item in storage.iter_stories()}


def entry(key: str, title: str, text: str, *, minutes: int = 0) -> ParsedEntry:
    published = NOW + timedelta(minutes=minutes)
    return ParsedEntry(
        key=key,
        title=title,
        link=f"https://{key}.example/story",
        summary=text[:200],
        content_html=f"<p>{text}</p>",
        text=text,
        author=None,
        published=published,
        updated=published,
        content_hash=hashlib.sha256(f"{title}\n{text}".encode()).hexdigest(),
    )


STORY = (
    "Storm Orla breaches Kelvar harbour wall",
    "Storm Orla breached the harbour wall at Kelvar Harbour on Monday, flooding 60 homes on Quay Street, "
    "the coastguard said. Mayor Ilse Brandt opened the sports hall to residents overnight.",
)


# --------------------------------------------------------------------------- PostgreSQL: one code path


@pytest.mark.postgres
def test_whole_pipeline_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Migrations, ingest, clustering, publishing and full-text search on PostgreSQL give
    the stories the SQLite default gives."""
    from aggregator.web import create_app

    results = []
    for url in (f"sqlite:///{tmp_path / 'a.db'}", pg_url):
        settings = _settings(url, tmp_path)
        storage = Storage(url)
        storage.upgrade()
        subscribe_demo(storage)
        report = run_pass(storage, _engine(settings), settings, all_feeds=True)
        assert all(r.status == "ok" for r in report.feeds)
        results.append(_stories(storage))
        client = create_app(settings, storage).test_client()
        river = client.get("/feed.atom?min_sources=2")
        assert river.status_code == 200 and river.data.count(b"<entry>") >= 5
        story = next(item for item in storage.iter_stories() if item.story.source_count >= 2)
        assert client.get(f"/stories/{story.story.id}/feed.atom").status_code == 200
        word = story.story.headline.split()[0]
        assert client.get(f"/?q={word}").status_code == 200
        page = client.get("/api/stories?page_size=100").get_json()
        assert page["total"] == len(results[-1])
        storage.close()
    assert results[0] == results[1]


@pytest.mark.postgres
def test_migrations_under_advisory_lock_do_not_race(pg_url: str) -> None:
    """Several processes upgrading a fresh database at once: all succeed, one schema."""
    assert upgrade_concurrently(pg_url) == []
    storage = Storage(pg_url)
    current, head = storage.schema_status()
    storage.close()
    assert current == head


@pytest.mark.postgres
def test_processes_refuse_an_out_of_date_postgresql_schema(pg_url: str) -> None:
    with pytest.raises(SchemaOutOfDateError, match="aggregator db upgrade"):
        open_storage(pg_url)
    _upgrade(pg_url)
    open_storage(pg_url).close()


# --------------------------------------------------------------------------- claims


@pytest.mark.postgres
def test_workers_claim_due_feeds_without_overlap_and_leases_expire(pg_url: str) -> None:
    one, two = Storage(pg_url), Storage(pg_url)
    one.upgrade()
    for n in range(40):
        one.add_feed(f"https://feeds{n}.example/rss", now=NOW)
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def claim(name: str, storage: Storage) -> None:
        barrier.wait()
        got = []
        for _ in range(10):
            got += [feed.id for feed in storage.claim_due_feeds(NOW, 3, lease_seconds=600)]
        claimed[name] = got

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("one", one), ("two", two))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(claimed["one"]) & set(claimed["two"])
    assert len(claimed["one"]) + len(claimed["two"]) == 40
    assert one.claim_due_feeds(NOW + timedelta(seconds=599), 50, lease_seconds=600) == []
    # a worker that crashed never wrote its feeds' state: they come back when the lease ends
    back = one.claim_due_feeds(NOW + timedelta(seconds=600), 50, lease_seconds=600)
    assert len(back) == 40
    two.release_feeds(back[:5])  # a stopping worker gives back what it did not fetch
    assert len(two.due_feeds(NOW + timedelta(seconds=601), 50)) == 5
    one.close()
    two.close()


# --------------------------------------------------------------------------- the shared index


def _doc(n: int, title: str, text: str) -> Document:
    return Document(
        id=n, title=title, text=text, published=NOW + timedelta(minutes=n), source=f"s{n}", url=None
    )


@pytest.mark.redis
def test_two_clusterers_share_one_redis_index(index_config: dict[str, object]) -> None:
    settings = ClusterSettings()
    first, second = _opened(Clusterer(settings, index_config)), _opened(Clusterer(settings, index_config))
    prepared = first.prepare(_doc(1, *STORY))
    first.add(prepared, 100)
    copy = second.prepare(_doc(2, *STORY))
    assert 1 in second._index.query(copy.sketch)  # the other process's entry is a candidate
    # datasketch's own MinHashLSH on the same basename sees the same entries
    from datasketch import MinHashLSH

    plain = MinHashLSH(threshold=0.1, num_perm=128, storage_config=index_config)
    try:
        assert 1 in plain.query(copy.sketch._m)
    finally:
        for table in (plain.keys, *plain.hashtables):
            table._redis.close()  # type: ignore[attr-defined]
            table._redis.connection_pool.disconnect()  # type: ignore[attr-defined]


@pytest.mark.redis
def test_restart_keeps_the_redis_index(index_config: dict[str, object]) -> None:
    settings = ClusterSettings()
    worker = _opened(Clusterer(settings, index_config))
    for n in range(1, 6):
        worker.add(worker.prepare(_doc(n, f"{STORY[0]} {n}", STORY[1])), 100)
    del worker  # the process ends
    restarted = _opened(CandidateIndex(SketchParams(), 0.1, index_config))
    assert restarted.keys() == {1, 2, 3, 4, 5}
    # restoring a worker's state from the database writes nothing to the shared index
    fresh = _opened(Clusterer(settings, index_config))
    fresh.restore(_doc(1, f"{STORY[0]} 1", STORY[1]), 100)
    assert fresh.reconcile_index() == (0, 4)  # entries of articles no longer held are removed
    assert restarted.keys() == {1}


@pytest.mark.redis
def test_shared_index_refuses_other_minhash_parameters(index_config: dict[str, object]) -> None:
    _opened(Clusterer(ClusterSettings(), index_config))
    with pytest.raises(IndexMismatchError, match="affine32:1:128"):
        _opened(Clusterer(ClusterSettings(num_perm=64), index_config))
    with pytest.raises(IndexMismatchError):
        _opened(Clusterer(ClusterSettings(seed=2), index_config))
    with pytest.raises(IndexMismatchError):
        _opened(Clusterer(ClusterSettings(threshold=0.3), index_config))


@pytest.mark.redis
def test_expired_articles_leave_the_shared_index(index_config: dict[str, object]) -> None:
    settings = ClusterSettings(window_hours=1)
    first, second = _opened(Clusterer(settings, index_config)), _opened(Clusterer(settings, index_config))
    first.add(first.prepare(_doc(1, *STORY)), 100)
    second.restore(_doc(1, *STORY), 100)
    later = Document(
        id=2,
        title="Budget vote delayed",
        text="Parliament delayed the budget vote again.",
        published=NOW + timedelta(hours=3),
        source="x",
        url=None,
    )
    second.add(second.prepare(later), 200)  # the window moves on: article 1 expires
    assert _opened(CandidateIndex(SketchParams(), 0.1, index_config)).keys() == {2}
    # the first worker catches up with article 2 and prunes article 1 too: a no-op, no error
    first.restore(later, 200)
    assert len(first) == 1 and _opened(CandidateIndex(SketchParams(), 0.1, index_config)).keys() == {2}


# --------------------------------------------------------------------------- racing workers


@pytest.mark.postgres
@pytest.mark.parametrize("shared", [False, pytest.param(True, marks=pytest.mark.redis)])
def test_racing_workers_end_with_one_story(
    pg_url: str, tmp_path: Path, shared: bool, request: pytest.FixtureRequest
) -> None:
    """Two workers (own engine, own ClusterEngine) store copies of one story at the same
    moment and cluster at once: the advisory lock serialises the passes, so one story."""
    config = request.getfixturevalue("index_config") if shared else None
    settings = _settings(pg_url, tmp_path)
    _upgrade(pg_url)
    workers = [(Storage(pg_url), _engine(settings, config)) for _ in range(2)]
    feeds = [workers[0][0].add_feed(f"https://outlet{n}.example/rss", now=NOW).id for n in range(2)]
    for round_ in range(5):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def work(
            n: int,
            round_: int = round_,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            storage, engine = workers[n]
            try:
                title, text = STORY
                item = entry(
                    f"o{n}-r{round_}", f"{title} (round {round_})", f"{text} Round {round_}.", minutes=round_
                )
                barrier.wait()
                storage.save_entries(feeds[n], [item], source=f"Outlet {n}", fetched_at=NOW)
                cluster_pending(storage, engine)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        stories = _stories(workers[0][0])
        assert len(stories) == 1, stories  # every round's copies joined the one story
        assert len(next(iter(stories))) == 2 * (round_ + 1)
    for storage, _ in workers:
        storage.close()


# --------------------------------------------------------------------------- incremental catch-up


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_alternating_workers_catch_up_without_rebuilding(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    settings = _settings(url, tmp_path)
    storage = Storage(url)
    storage.upgrade()
    subscribe_demo(storage)
    feeds = storage.list_feeds()
    one, two = _engine(settings), _engine(settings)
    from aggregator.ingest import update_feeds

    reports = []
    for n, feed in enumerate(feeds):
        update_feeds(storage, [feed], settings)
        reports.append(cluster_pending(storage, (one, two)[n % 2]))
    assert reports[0].rebuilt and reports[1].rebuilt  # each engine's first pass
    assert not any(r.rebuilt for r in reports[2:]) and all(r.caught_up for r in reports[2:])
    cluster_pending(storage, one)
    fresh = _engine(settings)
    cluster_pending(storage, fresh)
    assert one.clusterer.snapshot() == fresh.clusterer.snapshot()
    # an operator's split is a structural change: the next pass rebuilds
    story = next(item for item in storage.iter_stories() if len(item.articles) > 2)
    storage.split_article(story.articles[-1].id, now=NOW, by="test")
    assert cluster_pending(storage, two).rebuilt
    storage.close()
