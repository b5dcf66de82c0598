"""Progress for long commands: a live counter on a terminal, nothing otherwise.

When the output is not a terminal (a pipe, a log file, cron), long commands
stay line-oriented: they print their usual result lines and a summary, never
carriage returns or bars.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """``with Progress(total, "importing") as p: ... p.advance()``"""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None, *, interval: float = 0.1):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.interval = interval
        self._last = 0.0
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done == self.total:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        if self.total:
            width = 24
            filled = int(width * min(self.done / self.total, 1.0))
            bar = "#" * filled + "." * (width - filled)
            text = f"\r{self.label} [{bar}] {self.done}/{self.total}"
        else:
            text = f"\r{self.label} {self.done}"
        self.stream.write(text)
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
