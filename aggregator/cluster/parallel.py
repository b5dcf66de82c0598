"""An ordered map of a pure function over chunks, shared with helper processes.

A rebuild replays a few hundred thousand stored articles through the clusterer's state in
one order, but most of its cost is per-article work that reads no state (text features,
term weights, embeddings). :func:`ordered_map` lets helper processes do that part while
this process consumes the results in order:

* every chunk is claimed once, by whoever takes it first, in a shared table; helpers take
  chunks from the front of a queue, in order;
* this process consumes the results in order; when the next one is not ready it computes
  a chunk no one has claimed yet (the nearest one ahead) instead of waiting, so no process
  idles while work is left, whatever the speed of either side;
* helpers are *spawned* (a fresh interpreter), never forked: the daemon calls this from a
  scheduler thread beside web and fetch threads, and a fork copies their locks;
* anything that goes wrong in a helper (it fails to start, dies, or the function raises
  there) costs only time: the chunk is computed here, where an exception the function
  raises then surfaces with its own traceback. The results never depend on who computed
  them (the function must be pure), so the consumer sees the same sequence as
  ``map(func, chunks)``.

Nothing here knows what the chunks hold; ``func`` and the chunks must be picklable
(``func`` a module-level function).
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_POLL = 0.2  # seconds between liveness checks while waiting for a helper's result
_AHEAD = 4  # results each helper may have waiting for the consumer


def ordered_map(func: Callable[[T], R], chunks: Sequence[T], workers: int) -> Iterator[R]:
    """``func(chunk)`` for each chunk, in order, computed here and in ``workers`` helpers.

    With ``workers <= 0`` or a single chunk, nothing is started: plain ``map``.
    """
    if workers <= 0 or len(chunks) < 2:
        for chunk in chunks:
            yield func(chunk)
        return
    pool = _Helpers(func, chunks, min(workers, len(chunks) - 1))
    try:
        yield from pool.results()
    finally:
        pool.close()


def _claim(claimed: Any, i: int) -> bool:
    with claimed.get_lock():
        if claimed[i]:
            return False
        claimed[i] = 1
        return True


def _helper(func: Callable[[Any], Any], tasks: Any, results: Any, claimed: Any) -> None:
    """A helper's loop: take chunks in order, compute those no one has claimed, send them."""
    while True:
        task = tasks.get()
        if task is None:
            return
        i, chunk = task
        if not _claim(claimed, i):
            continue  # the consumer computed it meanwhile
        try:
            out = func(chunk)
        except BaseException as exc:  # noqa: BLE001 - the consumer recomputes it and raises
            results.put((i, False, f"{type(exc).__name__}: {exc}"))
            continue
        results.put((i, True, out))


class _Helpers:
    def __init__(self, func: Callable[[Any], Any], chunks: Sequence[Any], workers: int) -> None:
        self.func = func
        self.chunks = chunks
        self.procs: list[Any] = []
        self.ready: dict[int, Any] = {}
        self.broken = False  # a helper died: its claimed chunk will never come
        ctx = multiprocessing.get_context("spawn")
        try:
            self.claimed = ctx.Array("b", len(chunks))
            self.tasks = ctx.Queue()
            # bounded: a helper runs at most a few chunks ahead of the consumer (its results wait
            # in its memory otherwise); the consumer drains it whenever it waits, so it cannot lock up
            self.out = ctx.Queue(_AHEAD * workers)
            for _ in range(workers):
                proc = ctx.Process(
                    target=_helper,
                    args=(func, self.tasks, self.out, self.claimed),
                    name="aggregator-restore",
                    daemon=True,
                )
                proc.start()
                self.procs.append(proc)
            for i, chunk in enumerate(chunks):
                self.tasks.put((i, chunk))  # pickled by the queue's feeder thread, as helpers read
            for _ in self.procs:
                self.tasks.put(None)
        except (OSError, ValueError, RuntimeError) as exc:  # no semaphores, no spawn: work alone
            log.warning("restore helpers unavailable, working in one process: %s", exc)
            self.broken = True
            self.close()
            self.procs = []

    def results(self) -> Iterator[Any]:
        for i in range(len(self.chunks)):
            yield self._result(i)

    def _result(self, i: int) -> Any:
        if not self.procs or self._take(i):
            return self.func(self.chunks[i])
        ahead = i + 1
        while True:
            if i in self.ready:
                return self.ready.pop(i)
            if self._receive(block=False):
                continue
            # not ready: compute the nearest unclaimed chunk ahead rather than wait
            while ahead < len(self.chunks) and not self._take(ahead):
                ahead += 1
            if ahead < len(self.chunks):
                self.ready[ahead] = self.func(self.chunks[ahead])
                continue
            if self.broken or not any(p.is_alive() for p in self.procs):
                if not self._receive(block=False):
                    self.broken = True  # whoever claimed it is gone: compute it here
                    return self.func(self.chunks[i])
                continue
            self._receive(block=True)

    def _take(self, i: int) -> bool:
        return _claim(self.claimed, i)

    def _receive(self, *, block: bool) -> bool:
        """Store one result from the helpers; False when none came (within the poll)."""
        try:
            i, ok, out = self.out.get(block, _POLL) if block else self.out.get_nowait()
        except queue.Empty:
            if block and any(p.exitcode not in (None, 0) for p in self.procs):
                self.broken = True
            return False
        if ok:
            self.ready[i] = out
        else:  # the function failed there: compute it here, where the error surfaces in full
            log.debug("restore helper failed on chunk %d: %s", i, out)
            self.ready[i] = self.func(self.chunks[i])
        return True

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(5)
        for q in (getattr(self, "tasks", None), getattr(self, "out", None)):
            if q is not None:
                q.cancel_join_thread()  # unsent chunks are not needed any more
                q.close()
