"""ordered_map: a pure function over chunks, shared between this process and spawned
helpers, consumed in order; whatever happens to a helper, the sequence is map's."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from aggregator.cluster.parallel import ordered_map


def slow_square(n: int) -> tuple[int, int]:
    time.sleep(0.02)
    return n * n, os.getpid()


def fails_in_helpers(n: int) -> tuple[int, int]:
    if multiprocessing.parent_process() is not None:
        raise ValueError("only in a helper")
    return n * n, os.getpid()


def dies_in_helpers(n: int) -> tuple[int, int]:
    if multiprocessing.parent_process() is not None:
        os._exit(3)
    return n * n, os.getpid()


def fails_on_seven(n: int) -> int:
    time.sleep(0.01)
    if n == 7:
        raise KeyError(n)
    return n


def _run_with_deadline(fn, seconds: float = 60.0):  # type: ignore[no-untyped-def]
    """fn() in a thread; fails the test instead of hanging it."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "ordered_map hung"
    return out[0]


def _no_helpers_left() -> None:
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_results_are_map_in_order_and_the_work_is_shared(workers: int) -> None:
    chunks = list(range(120))
    results = _run_with_deadline(lambda: list(ordered_map(slow_square, chunks, workers)))
    assert [r for r, _ in results] == [n * n for n in chunks]
    pids = {pid for _, pid in results}
    assert os.getpid() in pids  # this process computed chunks while the helpers started
    assert len(pids) >= 2  # and the helpers computed others (2.4 s of work; one starts in well under that)
    _no_helpers_left()


def test_without_workers_nothing_is_started() -> None:
    seen: list[int] = []
    for value, pid in ordered_map(slow_square, [1, 2, 3], 0):
        seen.append(value)
        assert pid == os.getpid() and not multiprocessing.active_children()
    assert seen == [1, 4, 9]


def test_a_function_failing_in_a_helper_is_computed_here() -> None:
    results = _run_with_deadline(lambda: list(ordered_map(fails_in_helpers, list(range(40)), 1)))
    assert results == [(n * n, os.getpid()) for n in range(40)]
    _no_helpers_left()


def test_a_helper_that_dies_costs_only_time() -> None:
    results = _run_with_deadline(lambda: list(ordered_map(dies_in_helpers, list(range(40)), 2)))
    assert results == [(n * n, os.getpid()) for n in range(40)]
    _no_helpers_left()


def test_an_error_of_the_function_surfaces_with_its_own_type_and_stops_the_helpers() -> None:
    def consume() -> list[int]:
        got: list[int] = []
        with pytest.raises(KeyError):
            for value in ordered_map(fails_on_seven, list(range(60)), 1):
                got.append(value)
        return got

    assert _run_with_deadline(consume) == list(range(7))
    _no_helpers_left()


def test_leaving_early_stops_the_helpers() -> None:
    def first_three() -> list[tuple[int, int]]:
        out = []
        for item in ordered_map(slow_square, list(range(200)), 1):
            out.append(item)
            if len(out) == 3:
                break
        return out

    assert [v for v, _ in _run_with_deadline(first_three)] == [0, 1, 4]
    _no_helpers_left()
