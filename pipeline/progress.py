"""The one progress output: a live bar on a terminal, plain lines in a log file.

Every long loop of the project (preparation, encoding, evaluation, training) reports
through Progress, so its look and its rule are the same everywhere: redrawn in place at
most every `every` seconds on a terminal; into a file or pipe (nohup, CI, a scheduler's
log) one plain line every 10 s, without escape codes or carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress bar with count, rate and ETA, redrawn at most every `every` s."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str = "img",
        stream: TextIO | None = None,
        every: float = 0.5,
    ) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        # In a log file (CI, nohup) a redrawn line is noise: print a line every 10 s instead.
        self.tty = self.stream.isatty()
        self.every = every if self.tty else 10.0
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if now - self._last_draw >= self.every or self.count >= self.total:
            self._last_draw = now
            self._draw()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.count / max(self.elapsed, 1e-9)

    def _draw(self) -> None:
        fraction = self.count / self.total if self.total else 1.0
        filled = int(fraction * 24)
        eta = (self.total - self.count) / self.rate if self.count else 0.0
        line = (
            f"{self.label} [{'#' * filled}{'.' * (24 - filled)}] {self.count}/{self.total} "
            f"{self.rate:,.0f} {self.unit}/s ETA {duration(eta)} "
        )
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._draw()
            self.stream.write("\n")
        self.stream.flush()
