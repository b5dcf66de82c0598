"""Progress: drawn on a terminal, silent otherwise."""

from __future__ import annotations

import io

from aggregator.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_draws_on_a_terminal() -> None:
    stream = Terminal()
    with Progress(3, "importing", stream, interval=0) as bar:
        for _ in range(3):
            bar.advance()
    text = stream.getvalue()
    assert "\rimporting [" in text and "3/3" in text and text.endswith("\n")


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(3, "importing", stream, interval=0) as bar:
        bar.advance(3)
    assert stream.getvalue() == ""
    assert bar.done == 3


def test_unknown_total_counts() -> None:
    stream = Terminal()
    with Progress(None, "removing", stream, interval=0) as bar:
        bar.advance(500)
    assert "\rremoving 500" in stream.getvalue()
