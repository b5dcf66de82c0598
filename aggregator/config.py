"""Settings: one table of every option, loaded from a TOML file and the environment.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or
``AGGREGATOR_CONFIG``), ``AGGREGATOR_*`` environment variables, explicit
overrides (tests, CLI flags). Settings are loaded once at the edge (CLI, WSGI
entry) and passed down; nothing reads the environment anywhere else.

The TOML file uses the option names as keys, at top level or under an
``[aggregator]`` table::

    database_url = "sqlite:////var/lib/aggregator/aggregator.db"
    fetch_timeout = 20
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aggregator"


def default_database_url() -> str:
    return f"sqlite:///{default_data_dir() / 'aggregator.db'}"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        result = kind(value)
        if result <= 0:
            raise ValueError(f"must be positive: {value!r}")
        return result

    return parse


def _fraction(value: Any) -> float:
    result = float(value)
    if not 0.0 < result < 1.0:
        raise ValueError(f"must be between 0 and 1: {value!r}")
    return result


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = _str(value).strip()
    return text or None


def _redis_url(value: Any) -> str | None:
    text = _optional_str(value)
    if text is not None and not text.startswith(("redis://", "rediss://")):
        raise ValueError(f"must be a redis:// URL: {value!r}")
    return text


def _level(value: Any) -> str:
    text = _str(value).upper()
    if text not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"unknown log level {value!r}")
    return text


def _log_format(value: Any) -> str:
    text = _str(value).lower()
    if text not in {"kv", "json"}:
        raise ValueError(f"log_format must be kv or json, not {value!r}")
    return text


def _non_negative_int(value: Any) -> int:
    return int(_non_negative(int)(value))


def _non_negative_float(value: Any) -> float:
    return float(_non_negative(float)(value))


def _non_negative(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        result = kind(value)
        if not result >= 0 or result == float("inf"):  # also NaN
            raise ValueError(f"must be a finite number, not negative: {value!r}")
        return result

    return parse


def _scheme(value: Any) -> str:
    text = _str(value)
    if text not in {"affine32", "affine64", "legacy"}:
        raise ValueError(f"unknown MinHash scheme {value!r}")
    return text


@dataclass(frozen=True)
class Option:
    name: str
    default: Any  # a value, or a zero-argument callable for computed defaults
    parse: Callable[[Any], Any]
    doc: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "AGGREGATOR_" + self.name.upper()

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


# Every option, with its default and validator. README's configuration table is
# generated from this list (``aggregator config --markdown``) and a test checks it.
OPTIONS: tuple[Option, ...] = (
    Option("database_url", default_database_url, _str,
           "SQLAlchemy URL of the database. SQLite file under $XDG_DATA_HOME/aggregator/ by default; "
           "`postgresql+psycopg://user@host/db` at scale."),
    Option("host", "127.0.0.1", _str, "Address the web server listens on."),
    Option("port", 8080, _positive(int), "Port the web server listens on."),
    Option("base_url", None, _optional_str,
           "Public URL of the web service (used for feed ids and self links); defaults to the request's host."),
    Option("web_threads", 8, _positive(int), "Worker threads of the built-in web server."),
    Option("api_token", None, _optional_str,
           "Token that write endpoints of the JSON API require (`Authorization: Bearer ...`). Unset: write "
           "endpoints are off.", secret=True),
    Option("tick_seconds", 60, _positive(int), "How often the daemon's scheduler asks which feeds are due."),
    Option("feeds_per_tick", 50, _positive(int), "Most feeds updated in one tick."),
    Option("fetch_workers", 4, _positive(int), "Feeds fetched concurrently within one tick."),
    Option("default_interval", 1800, _positive(int), "Seconds between two polls of a healthy feed."),
    Option("min_interval", 300, _positive(int), "Shortest interval between two polls of a feed, in seconds."),
    Option("max_interval", 86400, _positive(int), "Longest interval between two polls of a feed, in seconds "
           "(also the cap of the error back-off)."),
    Option("fetch_timeout", 20.0, _positive(float), "Seconds allowed for connecting and for the whole response."),
    Option("max_feed_bytes", 10 * 1024 * 1024, _positive(int),
           "Largest response body accepted, in bytes (after decompression)."),
    Option("max_entries_per_feed", 1000, _positive(int), "Entries taken from one document; the rest are ignored."),
    Option("user_agent", "aggregator/0.1 (+https://github.com/aggregator/aggregator)", _str,
           "User-Agent header sent with every fetch."),
    Option("allow_private", False, _bool,
           "Allow fetching loopback, link-local and private addresses (the demo and tests set it)."),
    Option("allow_file_urls", True, _bool, "Allow feeds that are local files (`file://` or a path)."),
    Option("cluster_window_hours", 72, _positive(float),
           "An article may join a story only if the story had an article within this many hours of it."),
    Option("lsh_num_perm", 128, _positive(int), "MinHash permutations (stored with each signature)."),
    Option("lsh_seed", 1, int, "MinHash seed (stored with each signature)."),
    Option("lsh_scheme", "affine32", _scheme, "MinHash permutation scheme of datasketch 2.x (stored with each signature)."),
    Option("lsh_threshold", 0.1, _fraction, "Jaccard threshold of the LSH candidate index."),
    Option("rebuild_workers", 1, _non_negative_int,
           "Helper processes that share the per-article work (text features, embeddings) when the clustering "
           "state is rebuilt from 20,000 stored articles or more (at start, or after another process's changes); "
           "started for the rebuild and gone after it (~250 MB each meanwhile); the state itself is rebuilt in the "
           "daemon's process. 0: no helpers."),
    Option("index_url", None, _redis_url,
           "Redis URL (`redis://host:6379/0`) of the shared LSH index that several workers use; unset: the "
           "index lives in the process (the embedded default)."),
    Option("index_name", "aggregator", _str,
           "Name (Redis key prefix) of the shared LSH index; one per deployment sharing a Redis database."),
    Option("feed_lease_seconds", 900, _positive(int),
           "A worker claims the due feeds it fetches for this long; a crashed worker's feeds are due again after it."),
    Option("feed_max_entries", 50, _positive(int),
           "Entries in each published feed (Atom and RSS), and in each of its pages (`?page=N`)."),
    Option("feed_max_age", 300, _non_negative_int,
           "Seconds feed readers and caches may reuse a published feed (`Cache-Control: max-age`); "
           "they revalidate with `ETag`/`Last-Modified` after that."),
    Option("page_size", 50, _positive(int), "Stories per page of the web view and the API."),
    Option("render_cache_mb", 64, _non_negative_int,
           "Memory (MB) each web process may use to keep rendered feeds and river pages, reused as long as "
           "their validator (`ETag`) is unchanged; the least recently used go first. 0 turns the cache off."),
    Option("river_cache_seconds", 1.0, _non_negative_float,
           "Seconds each web process reuses its answer to a request for the river (`/`, `/feed.atom`, "
           "`/feed.rss`) from a reader without a session, without asking the database (a micro-cache: "
           "the river then shows a change at most this late). 0 turns it off."),
    Option("log_level", "INFO", _level, "Logging level (DEBUG, INFO, WARNING, ERROR)."),
    Option("log_format", "kv", _log_format, "Log line format: `kv` (key=value) or `json` (one object per line)."),
    Option("retention_days", 90, _non_negative_int,
           "Articles published longer ago than this are removed (with their signatures; their entry keys are "
           "remembered so feeds do not bring them back); stories left empty go too. 0 keeps everything."),
    Option("cleanup_hours", 24, _positive(float), "How often the daemon runs the retention clean-up and "
           "database maintenance."),
    Option("websub_default_lease", 864000, _positive(int),
           "WebSub: lease in seconds given to a subscription that asks for none (10 days). Subscribers renew "
           "by subscribing again before it ends."),
    Option("websub_max_lease", 2592000, _positive(int),
           "WebSub: longest lease granted, in seconds (30 days); longer requests get this."),
    Option("websub_max_attempts", 8, _positive(int),
           "WebSub: attempts to deliver one update to a failing callback before the delivery is dropped."),
    Option("websub_retry_seconds", 30, _positive(float),
           "WebSub: wait before the first retry of a failed delivery; doubles with every attempt (at most 1 h)."),
    Option("websub_timeout", 10.0, _positive(float),
           "WebSub: seconds allowed for one request to a subscriber's callback (verification or delivery)."),
    Option("websub_poll_seconds", 2.0, _positive(float),
           "WebSub: how often the delivery worker looks for due verifications, changed stories and deliveries."),
    Option("websub_workers", 4, _positive(int), "WebSub: deliveries sent concurrently."),
)

_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = None
    web_threads: int = 8
    api_token: str | None = None
    tick_seconds: int = 60
    feeds_per_tick: int = 50
    fetch_workers: int = 4
    default_interval: int = 1800
    min_interval: int = 300
    max_interval: int = 86400
    fetch_timeout: float = 20.0
    max_feed_bytes: int = 10 * 1024 * 1024
    max_entries_per_feed: int = 1000
    user_agent: str = "aggregator/0.1 (+https://github.com/aggregator/aggregator)"
    allow_private: bool = False
    allow_file_urls: bool = True
    cluster_window_hours: float = 72
    lsh_num_perm: int = 128
    lsh_seed: int = 1
    lsh_scheme: str = "affine32"
    lsh_threshold: float = 0.1
    rebuild_workers: int = 1
    index_url: str | None = None
    index_name: str = "aggregator"
    feed_lease_seconds: int = 900
    feed_max_entries: int = 50
    feed_max_age: int = 300
    page_size: int = 50
    render_cache_mb: int = 64
    river_cache_seconds: float = 1.0
    log_level: str = "INFO"
    log_format: str = "kv"
    retention_days: int = 90
    cleanup_hours: float = 24
    websub_default_lease: int = 864000
    websub_max_lease: int = 2592000
    websub_max_attempts: int = 8
    websub_retry_seconds: float = 30
    websub_timeout: float = 10.0
    websub_poll_seconds: float = 2.0
    websub_workers: int = 4

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **_validate(changes, "override"))

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, secrets masked, for logs and ``aggregator config``."""
        result = {}
        for option in OPTIONS:
            value = getattr(self, option.name)
            result[option.name] = "***" if option.secret and value else value
        return result


def _validate(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, raw in values.items():
        option = _BY_NAME.get(name)
        if option is None:
            raise ConfigError(f"{origin}: unknown setting {name!r}")
        try:
            result[name] = option.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: bad value for {name}: {exc}") from None
    return result


def read_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if "aggregator" in data and isinstance(data["aggregator"], dict):
        data = {**{k: v for k, v in data.items() if k != "aggregator"}, **data["aggregator"]}
    return _validate(data, str(path))


def load(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, the config file, the environment and overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or env.get("AGGREGATOR_CONFIG")
    if path:
        values.update(read_file(path))
    env_values = {
        option.name: env[option.env] for option in OPTIONS if option.env in env
    }
    values.update(_validate(env_values, "environment"))
    values.update(_validate({k: v for k, v in overrides.items() if v is not None}, "override"))
    settings = Settings(**values)
    if settings.min_interval > settings.max_interval:
        raise ConfigError("min_interval must not exceed max_interval")
    if settings.websub_default_lease > settings.websub_max_lease:
        raise ConfigError("websub_default_lease must not exceed websub_max_lease")
    return settings


def markdown_table() -> str:
    """The configuration table for README."""
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        default = option.default
        if option.name == "database_url":
            shown = "`sqlite:///$XDG_DATA_HOME/aggregator/aggregator.db`"
        elif default is None:
            shown = "unset"
        else:
            shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
        rows.append(f"| `{option.name}` | `{option.env}` | {shown} | {option.doc} |")
    return "\n".join(rows)
