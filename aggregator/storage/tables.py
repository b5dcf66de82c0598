"""SQLAlchemy 2.x table definitions: the schema that the Alembic migrations create.

Only ``aggregator.storage`` and ``migrations/`` import this module. Datetimes are
stored as naive UTC (``UTCDateTime`` adds and strips the zone) so that SQLite and
PostgreSQL behave the same.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)

    # On SQLite the two steps (this decorator's conversion, then the SQLite DATETIME
    # type's string formatting or parsing) are fused into one function each: the same
    # strings in the database, the same values out, at about a third of the cost per
    # value (a clustering pass binds and reads several datetimes per article).

    def bind_processor(self, dialect: Any) -> Any:
        if not _plain_sqlite_datetime(self.impl_instance):
            return super().bind_processor(dialect)
        generic = super().bind_processor(dialect)
        utc = timezone.utc

        def process(value: Any) -> Any:
            if type(value) is not datetime or value.tzinfo is None:
                return generic(value)  # None, naive (refused), subclasses: the two steps
            if value.tzinfo is not utc:
                value = value.astimezone(utc)
            # SQLite DATETIME's storage format, "%04d-%02d-%02d %02d:%02d:%02d.%06d".
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        if not _plain_sqlite_datetime(self.impl_instance):
            return super().result_processor(dialect, coltype)
        fromisoformat = datetime.fromisoformat
        utc = timezone.utc

        def process(value: Any) -> Any:
            # What SQLite DATETIME's processor (datetime.fromisoformat) then process_result_value do.
            if value is None:
                return None
            return fromisoformat(value).replace(tzinfo=utc)

        return process


# SQLite DATETIME's default storage format, which the fused bind processor writes (a
# release with another default would not match: the two steps then run as before).
_SQLITE_DATETIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _plain_sqlite_datetime(impl: Any) -> bool:
    """Whether ``impl`` (the dialect's implementation of ``UTCDateTime``) is SQLite's
    DATETIME with its default string format, which the fused processors reproduce
    (read from attributes that are not public API: if a SQLAlchemy release renames
    them, the two steps run as before)."""
    try:
        return (
            type(impl) is SQLITE_DATETIME
            and impl._storage_format == _SQLITE_DATETIME_FORMAT
            and impl._reg is None
        )
    except AttributeError:
        return False


def aware_utc(value: datetime | str | None) -> datetime | None:
    """A value read outside a typed column (aggregates such as min()/max(), the
    meta table) as aware UTC: SQLite returns text there, PostgreSQL a naive
    datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FeedRow(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    title: Mapped[str | None] = mapped_column(Text)
    site_url: Mapped[str | None] = mapped_column(String(2048))
    folder: Mapped[str | None] = mapped_column(String(255))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    etag: Mapped[str | None] = mapped_column(String(1024))
    last_modified: Mapped[str | None] = mapped_column(String(255))
    last_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_check_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Per-feed polling bounds (seconds) overriding the settings' when set.
    min_interval: Mapped[int | None] = mapped_column(Integer)
    max_interval: Mapped[int | None] = mapped_column(Integer)
    # Why polling stopped (410 Gone); due_feeds skips the feed while set.
    stopped: Mapped[str | None] = mapped_column(Text)
    # The last document's polling hints (JSON: ttl, skipHours/Days, sy:), kept across 304s.
    poll_hints: Mapped[str | None] = mapped_column(Text)


class StoryRow(Base):
    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    headline: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    first_published: Mapped[datetime] = mapped_column(UTCDateTime)
    last_published: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    source_count: Mapped[int] = mapped_column(Integer, default=0, index=True)
    merged_into: Mapped[int | None] = mapped_column(
        ForeignKey("stories.id", ondelete="SET NULL"), index=True
    )


class ArticleRow(Base):
    __tablename__ = "articles"
    __table_args__ = (
        UniqueConstraint("feed_id", "key", name="uq_articles_feed_key"),
        Index("ix_articles_pending", "clustered", "published"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feed_id: Mapped[int | None] = mapped_column(
        ForeignKey("feeds.id", ondelete="SET NULL"), index=True
    )
    key: Mapped[str] = mapped_column(String(2048))
    url: Mapped[str | None] = mapped_column(String(2048), index=True)
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    content_html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    published: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    dated: Mapped[bool] = mapped_column(Boolean, default=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    clustered: Mapped[bool] = mapped_column(Boolean, default=False)
    # Order in which articles were clustered; the index is rebuilt in this order.
    cluster_seq: Mapped[int | None] = mapped_column(BigInteger, index=True)
    story_id: Mapped[int | None] = mapped_column(
        ForeignKey("stories.id", ondelete="SET NULL"), index=True
    )
    score: Mapped[float | None] = mapped_column(Float)
    signal: Mapped[str | None] = mapped_column(String(64))
    copy_of: Mapped[int | None] = mapped_column(
        ForeignKey("articles.id", ondelete="SET NULL")
    )


class SignatureRow(Base):
    __tablename__ = "signatures"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True
    )
    params: Mapped[str] = mapped_column(String(64))  # scheme:seed:num_perm of the MinHash
    hashvalues: Mapped[bytes] = mapped_column(LargeBinary)


class CorrectionRow(Base):
    """An operator's correction of the clustering (who, when, what). A split is
    also a standing rule: the automatic clustering never merges the article's
    new story back into the story it was split from."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    by: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))  # "split" or "merge"
    story_id: Mapped[int] = mapped_column(Integer, index=True)  # split: from; merge: survivor
    other_story_id: Mapped[int] = mapped_column(Integer, index=True)  # split: new story; merge: merged
    article_id: Mapped[int | None] = mapped_column(Integer)  # split: the article moved
    note: Mapped[str] = mapped_column(Text, default="")


# Full-text search objects the migrations create outside the models (an FTS5
# virtual table and its shadow tables on SQLite, an expression GIN index on
# PostgreSQL); schema comparisons skip them.
SEARCH_OBJECTS = ("articles_fts", "ix_articles_search")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: leave the full-text search objects out of comparisons."""
    return not (name and name.startswith(SEARCH_OBJECTS))


class TombstoneRow(Base):
    """An article removed by retention: its feed must not bring it back."""

    __tablename__ = "tombstones"

    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(2048), primary_key=True)
    removed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class WebSubRequestRow(Base):
    """A WebSub subscribe or unsubscribe request waiting for its verification of
    intent; one per (topic, callback): a newer request replaces an older one."""

    __tablename__ = "websub_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of topic and callback
    mode: Mapped[str] = mapped_column(String(16))  # "subscribe" or "unsubscribe"
    topic: Mapped[str] = mapped_column(String(2048))
    callback: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str | None] = mapped_column(String(255))
    lease_seconds: Mapped[int] = mapped_column(Integer)
    story_id: Mapped[int | None] = mapped_column(Integer)  # the topic's story, for story feeds
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebSubSubscriptionRow(Base):
    """An active (verified) WebSub subscription, until ``expires_at``."""

    __tablename__ = "websub_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of topic and callback
    topic: Mapped[str] = mapped_column(String(2048))
    callback: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str | None] = mapped_column(String(255))
    lease_seconds: Mapped[int] = mapped_column(Integer)
    story_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Validator of the topic's content the subscriber has (or was last offered):
    # a change is distributed when the topic's current validator differs.
    version: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSubDeliveryRow(Base):
    """A pending content distribution: POST the topic's current feed to the
    subscription's callback at ``due_at`` (one at a time per subscription)."""

    __tablename__ = "websub_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("websub_subscriptions.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class MetaRow(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
