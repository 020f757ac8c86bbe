"""The one progress output: a live bar on a terminal, plain lines in a log file.

Every long loop of the project (preparation, encoding, evaluation, training) reports
through Progress, so its look and its rule are the same everywhere: redrawn in place at
most every `every` seconds on a terminal; into a file or pipe (nohup, CI, a scheduler's
log) one plain line every 10 s, without escape codes or carriage returns.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    """h:mm:ss, or m:ss under an hour."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Console:
    """Where progress goes, and the one rule for how it looks there.

    On a terminal, `bar(line)` redraws one line in place (cut to the terminal's width so it
    never wraps, at most every `every` seconds unless forced); anywhere else bars are not
    drawn and `line(text)` writes plain lines with no escape codes or carriage returns.
    `line` first clears a bar that is showing, so a message never lands inside one.
    """

    def __init__(self, stream: TextIO | None = None, every: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every
        self._drawn_at = 0.0
        self._width = 0  # of the bar on screen, 0 when none is

    def due(self, force: bool = False) -> bool:
        """Whether a redraw is due now (always when forced)."""
        now = time.perf_counter()
        if force or now - self._drawn_at >= self.every:
            self._drawn_at = now
            return True
        return False

    def bar(self, line: str) -> None:
        """Redraws the bar in place (terminals only)."""
        if not self.tty:
            return
        line = line[: shutil.get_terminal_size().columns - 1]
        self._write("\r" + line.ljust(self._width))
        self._width = len(line)

    def line(self, text: str) -> None:
        """One line of text: the bar, if shown, is cleared first."""
        if self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0
        self._write(text + "\n")

    def end_bar(self) -> None:
        """Leaves a shown bar on screen and moves below it."""
        if self._width:
            self._write("\n")
            self._width = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class Progress:
    """A one-line progress bar with count, rate and ETA: live on a terminal, a plain line
    every 10 s in a log file (see Console)."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str = "img",
        stream: TextIO | None = None,
        every: float = 0.5,
    ) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.console = Console(stream, every)
        # In a log file (CI, nohup) a redrawn line is noise: print a line every 10 s instead.
        if not self.console.tty:
            self.console.every = 10.0
        self.count = 0
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.console.due(force=self.count >= self.total):
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
        if self.console.tty:
            self.console.bar(line)
        else:
            self.console.line(line)

    def close(self) -> None:
        if self.console.tty:
            self._draw()
            self.console.end_bar()
        self.console.stream.flush()
