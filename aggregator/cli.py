"""The command line: ``aggregator COMMAND``.

Settings are loaded here, once, and passed down. Exit codes: 0 success (also
when some feeds failed: their errors are recorded on the feeds), 1 the
command could not do its job (bad argument, unknown feed), 2 usage error,
3 the service cannot work (bad configuration, database unavailable or out of
date).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from aggregator import __version__, config, logs
from aggregator import storage as storage_module
from aggregator.config import ConfigError, Settings
from aggregator.models import UpdateReport
from aggregator.progress import Progress
from aggregator.storage import FeedExistsError, Storage, StorageError

log = logging.getLogger("aggregator")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_SERVICE = 0, 1, 2, 3


class CommandError(Exception):
    """A command could not do what was asked; the message is for the user."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def demo_dir() -> Path:
    """The bundled demo feeds (``data/`` in the repository, ``aggregator.data`` when installed)."""
    return Path(str(resources.files("aggregator.data")))


def normalise_feed_url(value: str) -> str:
    """http(s) URLs as given; ``file://`` URLs and paths become absolute ``file://`` URLs."""
    value = value.strip()
    scheme = urlsplit(value).scheme.lower()
    if scheme in {"http", "https"}:
        return value
    if scheme == "file":
        return value
    if scheme and len(scheme) > 1:
        raise CommandError(f"unsupported URL scheme {scheme!r}: use http(s)://, file:// or a path")
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise CommandError(f"no such file: {path}")
    return path.as_uri()


# --------------------------------------------------------------------------- setup


def open_storage(settings: Settings) -> Storage:
    return storage_module.open_storage(settings.database_url)


def make_engine(settings: Settings) -> Any:
    from aggregator.cluster import ClusterSettings
    from aggregator.coordination import index_storage_config
    from aggregator.ingest import ClusterEngine

    storage_config = index_storage_config(settings.index_url, settings.index_name)
    return ClusterEngine(
        ClusterSettings.from_settings(settings), storage_config, rebuild_workers=settings.rebuild_workers
    )


def setup_logging(settings: Settings, stream: TextIO | None = None) -> None:
    logs.setup(settings.log_level, settings.log_format, stream)


# --------------------------------------------------------------------------- commands


MAX_FEED_INTERVAL = 365 * 86400


def interval_arg(value: str) -> int:
    """``--min-interval``/``--max-interval``: seconds, or ``default`` (0: the settings' value)."""
    if value.strip().lower() in ("default", "none", ""):
        return 0
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r} (or `default`)") from None
    if not 0 < seconds <= MAX_FEED_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_FEED_INTERVAL} seconds: {value!r}")
    return seconds


def _check_bounds(minimum: int | None, maximum: int | None) -> None:
    if minimum and maximum and minimum > maximum:
        raise CommandError(f"--min-interval ({minimum} s) must not exceed --max-interval ({maximum} s)")


def _choose(candidates: Sequence[Any], page: str, out: TextIO) -> list[Any]:
    """Ask which of several discovered feeds to add (only on a terminal)."""
    print(f"{page} offers {len(candidates)} feeds:", file=out)
    for number, candidate in enumerate(candidates, 1):
        title = f"  {candidate.title}" if candidate.title else ""
        print(f"  {number}. {candidate.url}{title}  ({candidate.type})", file=out)
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise CommandError(
            "several feeds found: run `aggregator feeds add URL` with the one you want, "
            "or add --first or --all"
        )
    while True:
        print(f"add which? [1-{len(candidates)}, a = all, q = none]: ", end="", file=out, flush=True)
        line = stdin.readline()
        if not line:
            raise CommandError("no feed chosen")
        answer = line.strip().lower()
        if answer == "q":
            raise CommandError("no feed chosen")
        if answer == "a":
            return list(candidates)
        if answer.isdigit() and 1 <= int(answer) <= len(candidates):
            return [candidates[int(answer) - 1]]
        print(f"please answer a number from 1 to {len(candidates)}, a or q", file=out)


def discover_feeds(url: str, args: argparse.Namespace, settings: Settings, out: TextIO) -> list[str]:
    """The feed URLs to subscribe for ``feeds add URL``: the URL itself when its
    path names a feed, when it is a feed or when it cannot be checked now, else
    the feeds its page announces."""
    from aggregator.discover import discover, looks_like_feed_url, no_feed_message
    from aggregator.fetch import FetchError, url_kind

    if args.no_discover or url_kind(url) != "http" or looks_like_feed_url(url):
        return [url]
    try:
        found = discover(url, settings, now=_now())
    except FetchError as exc:
        print(f"note: cannot check {url} now ({exc.message}); subscribing to it as given", file=out)
        return [url]
    if found.kind == "feed":
        return [url]
    if found.kind == "other":
        print(f"note: {no_feed_message(found)}; subscribing to it as given", file=out)
        return [url]
    if not found.candidates:
        raise CommandError(no_feed_message(found))
    if len(found.candidates) == 1 or args.first:
        chosen = [found.candidates[0]]
    elif args.all:
        chosen = list(found.candidates)
    else:
        chosen = _choose(found.candidates, found.url, out)
    for candidate in chosen:
        print(f"found feed {candidate.url} on {found.url}", file=out)
    return [candidate.url for candidate in chosen]


def cmd_feeds_add(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    url = normalise_feed_url(args.url)
    _check_bounds(args.min_interval, args.max_interval)
    urls = discover_feeds(url, args, settings, out)
    storage = open_storage(settings)
    added = 0
    for feed_url in urls:
        try:
            feed = storage.add_feed(
                feed_url, now=_now(), folder=args.folder, title=args.title,
                min_interval=args.min_interval or None, max_interval=args.max_interval or None,
            )
        except FeedExistsError as exc:
            if len(urls) == 1:
                raise CommandError(str(exc)) from None
            print(f"skipped {feed_url}: {exc}", file=out)
            continue
        added += 1
        print(f"added feed {feed.id}: {feed.url}", file=out)
    return EXIT_OK if added else EXIT_FAIL


def cmd_feeds_set(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = open_storage(settings)
    feed = storage.get_feed(args.id)
    if feed is None:
        raise CommandError(f"no feed with id {args.id}")
    changes: dict[str, Any] = {}
    if args.min_interval is not None:
        changes["min_interval"] = args.min_interval or None
    if args.max_interval is not None:
        changes["max_interval"] = args.max_interval or None
    if args.folder is not None:
        changes["folder"] = " ".join(args.folder.split()) or None
    if args.title is not None:
        changes["title"] = " ".join(args.title.split()) or None
    if not changes and not args.resume:
        raise CommandError("nothing to set: give --min-interval, --max-interval, --folder, --title or --resume")
    _check_bounds(changes.get("min_interval", feed.min_interval), changes.get("max_interval", feed.max_interval))
    updated = storage.set_feed(args.id, resume=args.resume, now=_now(), **changes)
    if updated is None:
        raise CommandError(f"no feed with id {args.id}")
    if args.resume and feed.stopped:
        print(f"feed {updated.id}: polling resumed (was: {feed.stopped})", file=out)
    _print_feed(updated, out)
    return EXIT_OK


def _interval_text(feed: Any) -> str:
    if not feed.min_interval and not feed.max_interval:
        return ""
    low = f"{feed.min_interval}s" if feed.min_interval else "default"
    high = f"{feed.max_interval}s" if feed.max_interval else "default"
    return f" interval={low}..{high}"


def _print_feed(feed: Any, out: TextIO) -> None:
    status = "ok" if feed.error_count == 0 else f"ERROR x{feed.error_count}: {feed.last_error}"
    if feed.last_fetched_at is None:
        status = "never fetched"
    if feed.stopped:
        status = f"STOPPED: {feed.stopped} (resume with `aggregator feeds set {feed.id} --resume`)"
    print(
        f"{feed.id:>5}  {feed.title or '-'}  <{feed.url}>\n"
        f"       folder={feed.folder or '-'} articles={feed.article_count}{_interval_text(feed)} status={status} "
        f"next_check={'-' if feed.stopped else feed.next_check_at.isoformat(timespec='seconds')}",
        file=out,
    )


def cmd_feeds_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = open_storage(settings)
    feeds = storage.list_feeds()
    if args.json:
        from aggregator.web.api import feed_json  # the API's record: one JSON shape for a feed

        for feed in feeds:
            print(json.dumps(feed_json(feed), ensure_ascii=False), file=out)
        return EXIT_OK
    if not feeds:
        print("no feeds; add one with `aggregator feeds add URL`", file=out)
        return EXIT_OK
    for feed in feeds:
        _print_feed(feed, out)
    return EXIT_OK


def cmd_feeds_remove(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = open_storage(settings)
    if not storage.remove_feed(args.id):
        raise CommandError(f"no feed with id {args.id}")
    print(f"removed feed {args.id} (its articles and stories are kept)", file=out)
    return EXIT_OK


def import_opml(
    storage: Storage, path: Path, *, out: TextIO | None = None, progress: bool = False
) -> tuple[int, int]:
    from aggregator.opml import OPMLError, parse_opml

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        subscriptions = parse_opml(data, base_dir=path.resolve().parent)
    except OPMLError as exc:
        raise CommandError(f"{path}: {exc}") from None
    added = skipped = 0
    with Progress(len(subscriptions) if progress else 0, "importing", None if progress else io.StringIO()) as bar:
        for sub in subscriptions:
            try:
                url = normalise_feed_url(sub.url)
                storage.add_feed(url, now=_now(), folder=sub.folder, title=sub.title)
                added += 1
            except FeedExistsError:
                skipped += 1
            except CommandError as exc:
                skipped += 1
                if out is not None:
                    print(f"skipped {sub.url}: {exc}", file=out)
            bar.advance()
    return added, skipped


def cmd_feeds_import(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = open_storage(settings)
    added, skipped = import_opml(storage, Path(args.file), out=out, progress=True)
    print(f"imported {added} feeds ({skipped} already subscribed or skipped)", file=out)
    return EXIT_OK


def cmd_feeds_export(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from aggregator.opml import build_opml

    storage = open_storage(settings)
    out.write(build_opml(storage.list_feeds(), now=_now()).decode("utf-8"))
    return EXIT_OK


def _print_report(out: TextIO) -> Any:
    def show(report: UpdateReport) -> None:
        if report.status == "error":
            print(f"feed {report.feed_id}: error: {report.error}  <{report.url}>", file=out)
        elif report.status == "not_modified":
            print(f"feed {report.feed_id}: not modified  <{report.url}>", file=out)
        else:
            print(
                f"feed {report.feed_id}: {report.new} new, {report.updated} updated, "
                f"{report.unchanged} unchanged  <{report.url}>",
                file=out,
            )

    return show


def cmd_update(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from aggregator.ingest import run_pass

    storage = open_storage(settings)
    engine = make_engine(settings)
    if args.all:
        total = sum(1 for feed in storage.list_feeds() if feed.stopped is None)
    else:
        total = len(storage.due_feeds(_now(), settings.feeds_per_tick))
    with Progress(total, "updating") as bar:
        show = _print_report(out)
        interactive = bar.live and out.isatty()

        def on_report(report: UpdateReport) -> None:
            if not interactive or report.status == "error":  # on a terminal the bar shows the rest
                show(report)
            bar.advance()

        report = run_pass(storage, engine, settings, all_feeds=args.all, on_report=on_report)
    errors = sum(1 for r in report.feeds if r.status == "error")
    print(
        f"updated {len(report.feeds)} feeds ({errors} with errors); clustered "
        f"{report.cluster.clustered} articles: {report.cluster.new_stories} new stories, "
        f"{report.cluster.joined} joined existing ones, {report.cluster.merges} merged",
        file=out,
    )
    return EXIT_OK


def cmd_stories_export(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = open_storage(settings)
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output else out
        for item in storage.iter_stories():
            record = {
                "id": item.story.id,
                "headline": item.story.headline,
                "articles": [
                    {
                        "id": a.id,
                        "url": a.url,
                        "title": a.title,
                        "source": a.source,
                        "published": a.published.isoformat(),
                    }
                    for a in item.articles
                ],
            }
            target.write(json.dumps(record, ensure_ascii=False) + "\n")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = open_storage(settings)
    now = _now()
    status = storage.status(now, window_hours=settings.cluster_window_hours)
    current, head = storage.schema_status()
    if args.json:
        data = dataclasses.asdict(status)
        data["schema"] = {"current": current, "head": head}
        print(json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)), file=out)
        return EXIT_OK

    def ago(value: datetime | None) -> str:
        if value is None:
            return "never"
        seconds = int((now - value).total_seconds())
        return f"{value.isoformat(timespec='seconds')} ({seconds // 60} min ago)"

    tick_state = {None: "no tick recorded", True: "ok", False: "FAILED"}[status.last_tick_ok]
    size = f"{status.database_bytes / 1e6:.1f} MB" if status.database_bytes is not None else "unknown"
    lines = [
        f"database:  {storage.url.split('://')[0]}, {size}, schema {current} ({'current' if current == head else 'OUT OF DATE'})",
        f"scheduler: last tick {ago(status.last_tick_at)}, last outcome {tick_state}",
        f"feeds:     {status.feeds} subscribed, {status.feeds_due} due now, {len(status.feeds_in_error)} in error",
        f"articles:  {status.articles} stored, {status.articles_24h} in the last 24 h, {status.pending} not yet clustered",
        f"stories:   {status.stories} live, {status.stories_24h} created in the last 24 h",
        f"index:     {status.index_articles} articles within the clustering window of {settings.cluster_window_hours:g} h",
    ]
    for problem in status.feeds_in_error:
        lines.append(f"  feed {problem.id} ({problem.title or problem.url}): {problem.error_count} errors, last: "
                     f"{problem.last_error}; next try {problem.next_check_at.isoformat(timespec='seconds')}")
    print("\n".join(lines), file=out)
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from aggregator.maintenance import cleanup

    storage = open_storage(settings)
    report = cleanup(storage, settings, now=_now(), progress=sys.stderr)
    if report is None:
        print("retention is off (retention_days = 0); maintenance done", file=out)
    else:
        print(
            f"removed {report.articles} articles and {report.stories} stories published before "
            f"{settings.retention_days} days ago; forgot {report.tombstones_pruned} old tombstones",
            file=out,
        )
    return EXIT_OK


def cmd_index_rebuild(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Rebuild this process's view of the clustering index from the stored
    signatures, and reconcile a shared (Redis) index with the database: entries
    of articles that left the window are removed, missing ones added."""
    storage = open_storage(settings)
    engine = make_engine(settings)
    started = time.perf_counter()
    with Progress(None, "rebuilding the index") as bar:
        count = engine.rebuild(storage, on_progress=bar.advance)
    print(
        f"index rebuilt from {count} stored articles of the clustering window "
        f"({len(engine.clusterer)} held) in {time.perf_counter() - started:.1f} s",
        file=out,
    )
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = Storage(settings.database_url)
    storage.upgrade()
    current, head = storage.schema_status()
    print(f"database at revision {current} (head {head})", file=out)
    return EXIT_OK


def cmd_db_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    storage = Storage(settings.database_url)
    current, head = storage.schema_status()
    state = "current" if current == head else "OUT OF DATE: run `aggregator db upgrade`"
    print(f"database revision {current or 'none'}, head {head}: {state}", file=out)
    return EXIT_OK if current == head else EXIT_SERVICE


def cmd_config(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    if args.markdown:
        print(config.markdown_table(), file=out)
        return EXIT_OK
    for name, value in settings.redacted().items():
        print(f"{name} = {json.dumps(value)}", file=out)
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from aggregator.evaluate import evaluate_file

    result = evaluate_file(
        Path(args.file),
        settings,
        predictions=Path(args.predictions) if args.predictions else None,
        progress=sys.stderr,
    )
    print(json.dumps(result), file=out)
    return EXIT_OK


def subscribe_demo(storage: Storage, base: str | None = None) -> int:
    """Subscribe the demo feeds: the bundled files, or the same files served under ``base``."""
    if base is None:
        added, _ = import_opml(storage, demo_dir() / "demo.opml")
        return added
    from aggregator.opml import parse_opml

    added = 0
    for sub in parse_opml((demo_dir() / "demo.opml").read_bytes()):
        with contextlib.suppress(FeedExistsError):
            storage.add_feed(base.rstrip("/") + "/" + sub.url, now=_now(), folder=sub.folder, title=sub.title)
            added += 1
    return added


def _wait_for_first_fetches(storage: Storage, settings: Settings) -> None:
    """Demo workers started together: wait until every feed was fetched once (by any of
    them), so that the first clustering pass sees every demo article in arrival order and
    the stories are those one process makes. Bounded by the fetch timeout."""
    deadline = _now().timestamp() + 2 * settings.fetch_timeout + 5
    while _now().timestamp() < deadline:
        if all(feed.last_fetched_at is not None for feed in storage.list_feeds()):
            return
        threading.Event().wait(0.1)


def cmd_run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from aggregator.ingest import run_pass

    def adjust(loaded: Settings) -> Settings:
        return loaded.replace(allow_private=True, allow_file_urls=True) if args.demo else loaded

    def reload() -> Settings:
        return adjust(_load_settings(args))

    settings = adjust(settings)
    if args.role == "web" and (args.demo or args.once):
        print("aggregator: --demo and --once need a role that ingests (worker or all)", file=sys.stderr)
        return EXIT_USAGE
    storage = open_storage(settings)
    engine = make_engine(settings) if args.role != "web" else None
    if args.demo:
        added = subscribe_demo(storage, args.demo_base)
        logs.event(log, "demo", feeds_added=added, dir=args.demo_base or str(demo_dir()))
        # A worker claims the (new, hence due) demo feeds like any others: several
        # workers started at once share them out; `all` fetches every one.
        first = run_pass(storage, engine, settings, all_feeds=args.role == "all",
                         before_cluster=(lambda: _wait_for_first_fetches(storage, settings))
                         if args.role == "worker" else None)
        counts = storage.counts()
        print(
            f"demo: {len(first.feeds)} feeds, {counts['articles']} articles, "
            f"{counts['stories']} stories ({storage.count_stories(min_sources=2)} with 2+ sources)",
            file=out,
        )
    if args.once:
        if not args.demo:
            report = run_pass(storage, engine, settings, on_report=_print_report(out))
            print(f"updated {len(report.feeds)} feeds, clustered {report.cluster.clustered} articles", file=out)
        return EXIT_OK
    return serve(settings, storage, engine, out=out, reload=reload, role=args.role)


# Settings that a running process cannot change: they need a restart.
RESTART_SETTINGS = ("database_url", "host", "port", "web_threads", "lsh_num_perm", "lsh_seed", "lsh_scheme",
                    "lsh_threshold", "cluster_window_hours", "index_url", "index_name")


def serve(
    settings: Settings,
    storage: Storage,
    engine: Any,
    *,
    out: TextIO,
    reload: Callable[[], Settings] | None = None,
    role: str = "all",
) -> int:
    """The daemon: the scheduler's tick in the background, the web server in front.

    ``role`` (see :mod:`aggregator.coordination`): ``worker`` runs the tick and the
    WebSub delivery without a web server, ``web`` the web server alone (stateless:
    WebSub requests wait in the database for a worker), ``all`` both.

    SIGTERM/SIGINT stop it (the tick in flight finishes); SIGHUP reloads the
    settings from the file and the environment without dropping the web
    server or the tick in flight."""
    from waitress.server import create_server

    from aggregator import websub
    from aggregator.scheduler import Daemon
    from aggregator.web import create_app

    hub = websub.Hub(settings, storage) if role != "web" else None
    daemon = Daemon(settings, storage, engine, on_stories_changed=hub.story_changed) if hub is not None else None
    app = create_app(settings, storage) if role != "worker" else None
    if app is not None and hub is not None:
        app.extensions["websub"] = hub  # POST /websub wakes the hub
    server = None
    if app is not None:
        server = create_server(app, host=settings.host, port=settings.port, threads=settings.web_threads)
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            logs.event(log, "signal", signal=signal.Signals(signum).name, action="stopping")
            if server is not None:
                server.close()

    def hup(_signum: int, _frame: Any) -> None:
        nonlocal settings
        if reload is None:
            return
        try:
            fresh = reload()
        except ConfigError as exc:
            logs.event(log, "reload", logging.ERROR, outcome="error", error=str(exc), kept="previous settings")
            return
        ignored = [name for name in RESTART_SETTINGS if getattr(fresh, name) != getattr(settings, name)]
        if ignored:
            fresh = fresh.replace(**{name: getattr(settings, name) for name in ignored})
        settings = fresh
        setup_logging(settings)
        if engine is not None:
            engine.rebuild_workers = settings.rebuild_workers  # read at the next rebuild
        if daemon is not None and hub is not None:
            daemon.reconfigure(settings)
            hub.settings = settings
        if app is not None:
            app.extensions["aggregator"] = dataclasses.replace(app.extensions["aggregator"], settings=settings)
        logs.event(log, "reload", outcome="ok", needs_restart=",".join(ignored) or None)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hup)
    if daemon is not None and hub is not None:
        daemon.start()
        hub.start()
    if server is not None:
        print(f"serving on http://{settings.host}:{server.effective_port}/  (Ctrl-C to stop)", file=out, flush=True)
    else:
        print(f"worker running, pid {os.getpid()}  (Ctrl-C to stop)", file=out, flush=True)
    try:
        if server is not None:
            server.run()
        else:
            while not stopping.wait(0.5):
                pass
    except (KeyboardInterrupt, SystemExit):
        pass
    except OSError:
        if not stopping.is_set():
            raise
    finally:
        if daemon is not None and hub is not None:
            daemon.shutdown(wait=True)
            hub.stop(timeout=2 * settings.websub_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        storage.close()
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator", description="A deduplicating news-feed aggregator: one story per event."
    )
    parser.add_argument("--version", action="version", version=f"aggregator {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (default: $AGGREGATOR_CONFIG)")
    parser.add_argument("--database-url", help="override AGGREGATOR_DATABASE_URL")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the daemon: scheduled ingest plus the web server")
    run.add_argument("--demo", action="store_true", help="subscribe the bundled demo feeds and ingest them first")
    run.add_argument("--once", action="store_true", help="one ingest-and-cluster pass, then exit")
    run.add_argument("--role", choices=("all", "worker", "web"), default="all",
                     help="worker: scheduler, ingest and clustering (by the one worker that is the clustering "
                          "leader) without a web server; web: the web server only (stateless); all: both (default)")
    run.add_argument("--demo-base", metavar="URL",
                     help="with --demo: the demo feeds are served under this URL instead of read from the files")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default 8080)")
    run.set_defaults(func=cmd_run)

    update = commands.add_parser("update", help="one pass over the due feeds, then cluster")
    update.add_argument("--all", action="store_true", help="every feed, due or not")
    update.set_defaults(func=cmd_update)

    feeds = commands.add_parser("feeds", help="manage subscriptions").add_subparsers(
        dest="feeds_command", required=True, metavar="ACTION"
    )
    add = feeds.add_parser(
        "add",
        help="subscribe to a feed (http(s) URL, file:// URL or path), or to the feeds a site's page announces",
    )
    add.add_argument("url")
    add.add_argument("--folder")
    add.add_argument("--title", help="name shown until the feed's own title arrives")
    add.add_argument("--min-interval", type=interval_arg, metavar="SECONDS",
                     help="poll this feed at most this often (overrides min_interval)")
    add.add_argument("--max-interval", type=interval_arg, metavar="SECONDS",
                     help="poll this feed at least this often (overrides max_interval)")
    pick = add.add_mutually_exclusive_group()
    pick.add_argument("--first", action="store_true", help="a page announcing several feeds: add the first")
    pick.add_argument("--all", action="store_true", help="a page announcing several feeds: add them all")
    pick.add_argument("--no-discover", action="store_true",
                      help="subscribe to URL as given, without fetching it now (as for URLs whose path "
                           "names a feed: .xml, .rss, .atom, .rdf, .json, /feed, /rss, /atom)")
    add.set_defaults(func=cmd_feeds_add)
    fset = feeds.add_parser("set", help="change a feed's polling bounds, folder or title; resume a stopped feed")
    fset.add_argument("id", type=int)
    fset.add_argument("--min-interval", type=interval_arg, metavar="SECONDS",
                      help="seconds, or `default` for the min_interval setting")
    fset.add_argument("--max-interval", type=interval_arg, metavar="SECONDS",
                      help="seconds, or `default` for the max_interval setting")
    fset.add_argument("--folder", help='folder name ("" for none)')
    fset.add_argument("--title", help='name shown until the feed\'s own title arrives ("" for none)')
    fset.add_argument("--resume", action="store_true",
                      help="poll again a feed that was stopped (410 Gone), starting now")
    fset.set_defaults(func=cmd_feeds_set)
    lst = feeds.add_parser("list", help="subscriptions with their status")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=cmd_feeds_list)
    rm = feeds.add_parser("remove", help="unsubscribe (articles and stories are kept)")
    rm.add_argument("id", type=int)
    rm.set_defaults(func=cmd_feeds_remove)
    imp = feeds.add_parser("import", help="subscribe to every feed of an OPML file")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_feeds_import)
    feeds.add_parser("export", help="write the subscriptions as OPML to stdout").set_defaults(func=cmd_feeds_export)

    stories = commands.add_parser("stories", help="stories").add_subparsers(
        dest="stories_command", required=True, metavar="ACTION"
    )
    exp = stories.add_parser("export", help="JSON lines, one story per line with its articles")
    exp.add_argument("--output", "-o", help="file to write (default stdout)")
    exp.set_defaults(func=cmd_stories_export)

    status = commands.add_parser("status", help="scheduler, feeds in error, recent articles and stories")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=cmd_status)

    commands.add_parser(
        "cleanup", help="remove articles older than retention_days now, and do database maintenance"
    ).set_defaults(func=cmd_cleanup)

    index = commands.add_parser("index", help="the clustering index").add_subparsers(
        dest="index_command", required=True, metavar="ACTION"
    )
    index.add_parser(
        "rebuild", help="rebuild from the stored signatures (and reconcile a shared Redis index)"
    ).set_defaults(func=cmd_index_rebuild)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    db.add_parser("upgrade", help="apply the migrations").set_defaults(func=cmd_db_upgrade)
    db.add_parser("status", help="schema revision of the database").set_defaults(func=cmd_db_status)

    ev = commands.add_parser("evaluate", help="replay a labelled JSONL file and score the clustering")
    ev.add_argument("file")
    ev.add_argument("--predictions", metavar="OUT.tsv", help="write id<TAB>story_id lines")
    ev.set_defaults(func=cmd_evaluate)

    cfg = commands.add_parser("config", help="show the effective settings")
    cfg.add_argument("--markdown", action="store_true", help="the table of every setting, for docs")
    cfg.set_defaults(func=cmd_config)
    return parser


def _load_settings(args: argparse.Namespace) -> Settings:
    return config.load(
        args.config,
        database_url=args.database_url,
        log_level=args.log_level,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _load_settings(args)
    except ConfigError as exc:
        print(f"aggregator: configuration error: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    setup_logging(settings)
    try:
        return int(args.func(args, settings, out))
    except CommandError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except StorageError as exc:
        print(f"aggregator: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
