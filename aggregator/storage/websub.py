"""The WebSub part of the storage facade: requests waiting for verification,
active subscriptions and pending deliveries (see :mod:`aggregator.websub`).

Everything lives in the database so that the web process that receives
``POST /websub`` and the worker that verifies and distributes can be
different processes. Mixed into :class:`aggregator.storage.Storage`; like the
rest of the facade it takes and returns plain records and raises only storage
errors.

Concurrency: a request is claimed by deleting it, a delivery by moving its
``due_at`` past the attempt's deadline (``websub_claim_delivery``), so two
workers never verify or send the same thing twice at once. There is at most
one pending delivery per subscription: it renders the topic's feed when it is
sent, so later changes ride along.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from aggregator.storage.tables import (
    StoryRow,
    WebSubDeliveryRow,
    WebSubRequestRow,
    WebSubSubscriptionRow,
)

stories = StoryRow.__table__
requests = WebSubRequestRow.__table__
subscriptions = WebSubSubscriptionRow.__table__
deliveries = WebSubDeliveryRow.__table__

_CHUNK = 500
MAX_ERROR_LENGTH = 500


def subscription_key(topic: str, callback: str) -> str:
    """The identity of a subscription (W3C WebSub: the pair topic, callback),
    hashed so that two long URLs fit one unique index."""
    return hashlib.sha256(f"{topic}\n{callback}".encode()).hexdigest()


@dataclass(frozen=True)
class WebSubRequest:
    """A subscribe or unsubscribe request waiting for its verification of intent."""

    id: int
    mode: str  # "subscribe" or "unsubscribe"
    topic: str
    callback: str
    secret: str | None
    lease_seconds: int
    story_id: int | None
    requested_at: datetime


@dataclass(frozen=True)
class WebSubSubscription:
    id: int
    topic: str
    callback: str
    secret: str | None
    lease_seconds: int
    story_id: int | None  # the topic's story (story feeds); None for the river
    created_at: datetime
    renewed_at: datetime
    expires_at: datetime
    version: str | None  # validator of the content the subscriber has
    delivered_at: datetime | None
    pending: bool = False  # a delivery is waiting


@dataclass(frozen=True)
class WebSubDelivery:
    id: int
    subscription: WebSubSubscription
    created_at: datetime
    due_at: datetime
    attempts: int  # attempts made so far
    last_error: str | None


class WebSubBusyError(Exception):
    """Too many requests are waiting for verification; try again later."""


class WebSubMixin:
    """Subscriptions, verifications and deliveries of the WebSub hub."""

    _tx: Any  # the facade's transaction context manager

    # ------------------------------------------------------------------ requests

    def websub_add_request(
        self,
        *,
        mode: str,
        topic: str,
        callback: str,
        secret: str | None,
        lease_seconds: int,
        story_id: int | None,
        now: datetime,
        max_pending: int,
    ) -> int:
        """Queue a request for verification; it replaces a waiting request for
        the same (topic, callback). Raises :class:`WebSubBusyError` when
        ``max_pending`` requests are already waiting."""
        key = subscription_key(topic, callback)
        with self._tx(write=True) as conn:
            conn.execute(delete(requests).where(requests.c.key == key))
            waiting = conn.execute(select(func.count()).select_from(requests)).scalar_one()
            if waiting >= max_pending:
                raise WebSubBusyError(f"{waiting} requests are waiting for verification")
            return int(
                conn.execute(
                    insert(requests).values(
                        key=key,
                        mode=mode,
                        topic=topic,
                        callback=callback,
                        secret=secret,
                        lease_seconds=lease_seconds,
                        story_id=story_id,
                        requested_at=now,
                    )
                ).inserted_primary_key[0]
            )

    def websub_requests(self, limit: int = 100) -> list[WebSubRequest]:
        """Requests waiting for verification, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(select(requests).order_by(requests.c.id).limit(limit)).all()
        return [
            WebSubRequest(
                id=row.id,
                mode=row.mode,
                topic=row.topic,
                callback=row.callback,
                secret=row.secret,
                lease_seconds=row.lease_seconds,
                story_id=row.story_id,
                requested_at=row.requested_at,
            )
            for row in rows
        ]

    def websub_take_request(self, request_id: int) -> bool:
        """Claim a request (it is removed); False when another worker took it
        first or a newer request replaced it."""
        with self._tx(write=True) as conn:
            return bool(conn.execute(delete(requests).where(requests.c.id == request_id)).rowcount)

    # ------------------------------------------------------------------ subscriptions

    def websub_activate(
        self, request: WebSubRequest, *, now: datetime, expires_at: datetime, version: str | None
    ) -> tuple[WebSubSubscription, bool]:
        """Make a verified subscription active, or renew it (new lease and
        secret; what it has been sent is kept). Returns it and whether it is new."""
        key = subscription_key(request.topic, request.callback)
        values = {
            "secret": request.secret,
            "lease_seconds": request.lease_seconds,
            "story_id": request.story_id,
            "renewed_at": now,
            "expires_at": expires_at,
        }
        with self._tx(write=True) as conn:
            found = conn.execute(select(subscriptions.c.id).where(subscriptions.c.key == key)).first()
            if found is None:
                conn.execute(
                    insert(subscriptions).values(
                        key=key,
                        topic=request.topic,
                        callback=request.callback,
                        created_at=now,
                        version=version,
                        **values,
                    )
                )
            else:
                conn.execute(update(subscriptions).where(subscriptions.c.id == found.id).values(**values))
            row = conn.execute(_with_pending().where(subscriptions.c.key == key)).one()
        return _subscription(row), found is None

    def websub_remove(self, topic: str, callback: str) -> bool:
        """End a subscription (its pending delivery goes with it)."""
        key = subscription_key(topic, callback)
        with self._tx(write=True) as conn:
            ids = conn.execute(select(subscriptions.c.id).where(subscriptions.c.key == key)).scalars().all()
            if not ids:
                return False
            conn.execute(delete(deliveries).where(deliveries.c.subscription_id.in_(ids)))
            conn.execute(delete(subscriptions).where(subscriptions.c.id.in_(ids)))
            return True

    def websub_subscription(self, topic: str, callback: str) -> WebSubSubscription | None:
        with self._tx() as conn:
            row = conn.execute(
                _with_pending().where(subscriptions.c.key == subscription_key(topic, callback))
            ).first()
        return None if row is None else _subscription(row)

    def websub_active(
        self, now: datetime, *, story_ids: Collection[int] | None = None, river: bool = True
    ) -> list[WebSubSubscription]:
        """Subscriptions whose lease has not ended. With ``story_ids``: only those
        whose topic is the feed of one of those stories (or of a story merged
        into one of them), plus, with ``river``, those whose topic is a river feed."""
        query = _with_pending().where(subscriptions.c.expires_at > now).order_by(subscriptions.c.id)
        if story_ids is None:
            with self._tx() as conn:
                return [_subscription(row) for row in conn.execute(query)]
        ids = sorted(set(story_ids))
        found: dict[int, WebSubSubscription] = {}
        with self._tx() as conn:
            for start in range(0, max(len(ids), 1), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                conditions = []
                if chunk:
                    merged = select(stories.c.id).where(stories.c.merged_into.in_(chunk))
                    conditions += [subscriptions.c.story_id.in_(chunk), subscriptions.c.story_id.in_(merged)]
                if river and start == 0:
                    conditions.append(subscriptions.c.story_id.is_(None))
                if not conditions:
                    continue
                for row in conn.execute(query.where(or_(*conditions))):
                    found[row.id] = _subscription(row)
        return [found[key] for key in sorted(found)]

    def websub_expire(self, now: datetime) -> list[WebSubSubscription]:
        """Remove the subscriptions whose lease has ended; returns them."""
        with self._tx(write=True) as conn:
            rows = conn.execute(_with_pending().where(subscriptions.c.expires_at <= now)).all()
            ids = [row.id for row in rows]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                conn.execute(delete(deliveries).where(deliveries.c.subscription_id.in_(chunk)))
                conn.execute(delete(subscriptions).where(subscriptions.c.id.in_(chunk)))
        return [_subscription(row) for row in rows]

    def websub_set_version(self, subscription_id: int, version: str | None) -> None:
        with self._tx(write=True) as conn:
            conn.execute(
                update(subscriptions).where(subscriptions.c.id == subscription_id).values(version=version)
            )

    def websub_counts(self) -> dict[str, int]:
        with self._tx() as conn:
            return {
                "subscriptions": conn.execute(select(func.count()).select_from(subscriptions)).scalar_one(),
                "requests": conn.execute(select(func.count()).select_from(requests)).scalar_one(),
                "deliveries": conn.execute(select(func.count()).select_from(deliveries)).scalar_one(),
            }

    # ------------------------------------------------------------------ deliveries

    def websub_enqueue(self, subscription_ids: Iterable[int], *, now: datetime) -> int:
        """Queue a delivery, due now, for each subscription that has none waiting.
        Returns how many were queued."""
        ids = sorted(set(subscription_ids))
        if not ids:
            return 0
        try:
            with self._tx(write=True) as conn:
                queued = 0
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    live = set(
                        conn.execute(
                            select(subscriptions.c.id).where(subscriptions.c.id.in_(chunk))
                        ).scalars()
                    )
                    waiting = set(
                        conn.execute(
                            select(deliveries.c.subscription_id).where(
                                deliveries.c.subscription_id.in_(chunk)
                            )
                        ).scalars()
                    )
                    rows = [
                        {"subscription_id": sid, "created_at": now, "due_at": now, "attempts": 0}
                        for sid in chunk
                        if sid in live and sid not in waiting
                    ]
                    if rows:
                        conn.execute(insert(deliveries), rows)
                        queued += len(rows)
                return queued
        except IntegrityError:  # another worker queued the same ones meanwhile
            return 0

    def websub_due_deliveries(self, now: datetime, limit: int = 100) -> list[WebSubDelivery]:
        """Deliveries due at ``now`` for subscriptions whose lease has not ended, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.id.label("delivery_id"),
                    deliveries.c.created_at.label("delivery_created_at"),
                    deliveries.c.due_at,
                    deliveries.c.attempts,
                    deliveries.c.last_error,
                    *subscriptions.c,
                )
                .join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id)
                .where(deliveries.c.due_at <= now, subscriptions.c.expires_at > now)
                .order_by(deliveries.c.due_at, deliveries.c.id)
                .limit(limit)
            ).all()
        return [
            WebSubDelivery(
                id=row.delivery_id,
                subscription=_subscription(row, pending=True),
                created_at=row.delivery_created_at,
                due_at=row.due_at,
                attempts=row.attempts,
                last_error=row.last_error,
            )
            for row in rows
        ]

    def websub_claim_delivery(self, delivery: WebSubDelivery, *, now: datetime, until: datetime) -> bool:
        """Take a due delivery for one attempt: its ``due_at`` moves to ``until``
        (the attempt's deadline), so no other worker sends it meanwhile, and a
        worker that dies mid-attempt leaves it due again after ``until``."""
        with self._tx(write=True) as conn:
            result = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == delivery.id,
                    deliveries.c.attempts == delivery.attempts,
                    deliveries.c.due_at <= now,
                )
                .values(due_at=until)
            )
            return bool(result.rowcount)

    def websub_delivered(self, delivery: WebSubDelivery, *, version: str | None, now: datetime) -> None:
        """The subscriber has the content of ``version``: the delivery is done."""
        with self._tx(write=True) as conn:
            conn.execute(delete(deliveries).where(deliveries.c.id == delivery.id))
            conn.execute(
                update(subscriptions)
                .where(subscriptions.c.id == delivery.subscription.id)
                .values(version=version, delivered_at=now)
            )

    def websub_retry(self, delivery: WebSubDelivery, *, attempts: int, due_at: datetime, error: str) -> None:
        with self._tx(write=True) as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery.id)
                .values(attempts=attempts, due_at=due_at, last_error=error[:MAX_ERROR_LENGTH])
            )

    def websub_drop(self, delivery: WebSubDelivery, *, version: str | None) -> None:
        """Give up a delivery. The subscription keeps ``version`` (the content it
        was not sent), so that only the topic's next change is distributed again."""
        with self._tx(write=True) as conn:
            conn.execute(delete(deliveries).where(deliveries.c.id == delivery.id))
            conn.execute(
                update(subscriptions)
                .where(subscriptions.c.id == delivery.subscription.id)
                .values(version=version)
            )

    # ------------------------------------------------------------------ changes

    def stories_changed_since(self, since: datetime, limit: int = 10_000) -> list[tuple[int, datetime]]:
        """(id, updated_at) of the stories (merged ones too) changed after ``since``."""
        with self._tx() as conn:
            rows = conn.execute(
                select(stories.c.id, stories.c.updated_at)
                .where(stories.c.updated_at > since)
                .order_by(stories.c.updated_at, stories.c.id)
                .limit(limit)
            ).all()
        return [(row.id, row.updated_at) for row in rows]


def _with_pending() -> Any:
    waiting = exists().where(deliveries.c.subscription_id == subscriptions.c.id)
    return select(*subscriptions.c, waiting.label("pending"))


def _subscription(row: Any, *, pending: bool | None = None) -> WebSubSubscription:
    return WebSubSubscription(
        id=row.id,
        topic=row.topic,
        callback=row.callback,
        secret=row.secret,
        lease_seconds=row.lease_seconds,
        story_id=row.story_id,
        created_at=row.created_at,
        renewed_at=row.renewed_at,
        expires_at=row.expires_at,
        version=row.version,
        delivered_at=row.delivered_at,
        pending=bool(row.pending) if pending is None else pending,
    )
