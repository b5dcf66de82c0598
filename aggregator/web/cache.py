"""A bounded cache of rendered responses, keyed by their strong validator.

A feed's ``ETag`` is a hash of everything its bytes are made of (the story's or the
listed stories' versions, the format, the page, the page size, the public base URL,
:data:`aggregator.publish.FORMAT_VERSION`); two renders with one ``ETag`` are
byte-identical. So a rendered body can be kept under its ``ETag`` and handed to the
next reader who has no (or an old) copy: nothing is read from the articles and
nothing is rendered. Invalidation is the key itself: a story that changes gets a new
``ETag`` (a new article, an article updated in place, a merge or a split all move
its ``updated_at`` or its article count), its new rendering goes in under the new
key, and the old one ages out, least recently used first.

One cache per web process (``render_cache_mb`` of bodies, 0: off), shared by its
threads. Only full bodies that are exact functions of their key go in; pages that
depend on the reader (a signed-in operator, flashed messages) never do.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

FLIGHT_WAIT_SECONDS = 30.0


class _Flight:
    """One rendering in progress, that other threads may wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: bytes | None = None


class RenderCache:
    """LRU of ``key -> (body, extra)`` bounded by the bodies' total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._items: OrderedDict[str, tuple[bytes, object]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: str) -> tuple[bytes, object] | None:
        if not self.max_bytes:
            return None
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def peek(self, key: str) -> tuple[bytes, object] | None:
        """:meth:`get` without counting a miss (a first look that may be repeated)."""
        if not self.max_bytes:
            return None
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return found

    def put(self, key: str, body: bytes, extra: object = None) -> None:
        size = len(body)
        if not self.max_bytes or size > self.max_bytes // 4:  # one huge body must not flush the rest
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old[0])
            self._items[key] = (body, extra)
            self._size += size
            while self._size > self.max_bytes:
                _, (dropped, _) = self._items.popitem(last=False)
                self._size -= len(dropped)

    def get_or_render(self, key: str, render: Callable[[], bytes]) -> bytes:
        """The body under ``key``, else ``render()``'s, kept. Threads that ask for a
        key being rendered wait for that rendering instead of repeating it (when
        ingest changes the river, every reader asks for the new one at once)."""
        if not self.max_bytes:
            return render()
        found = self.get(key)
        if found is not None:
            return found[0]
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if flight.done.wait(FLIGHT_WAIT_SECONDS) and flight.body is not None:
                return flight.body
            return render()  # the leader failed (or is stuck): render it here
        try:
            body = render()
            flight.body = body
            self.put(key, body)
            return body
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes of bodies held."""
        return self._size
