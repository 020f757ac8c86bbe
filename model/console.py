"""What every command-line tool shares: quiet TensorFlow start-up, --help, a progress line."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from absl import app, flags

_QUIET_LEVEL = "2"  # hide INFO and WARNING from TensorFlow's C++ side


def _drop_library_info(record: logging.LogRecord) -> bool:
    """Lets through warnings, and info logged by this project rather than TF or Keras."""
    return record.levelno >= logging.WARNING or not any(
        f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("tensorflow", "keras")
    )


def quiet_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up log lines hidden.

    Call it before anything imports TensorFlow. A user's own TF_CPP_MIN_LOG_LEVEL
    wins and leaves stderr untouched. TensorFlow >= 2.18 prints its start-up lines
    before absl logging reads that variable, so they are sent to /dev/null for the
    import and device discovery only; Python errors still surface afterwards. The
    variable is set for the import only, so child processes decide for themselves.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = _QUIET_LEVEL
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery prints the CUDA probe lines
        tf.get_logger().setLevel("WARNING")  # and its Python side: export INFO chatter
        logging.getLogger("absl").addFilter(_drop_library_info)  # checkpoint INFO chatter
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        del os.environ["TF_CPP_MIN_LOG_LEVEL"]


def run_app(main: Callable[[Sequence[str]], None]) -> None:
    """absl's app.run(main), with --help listing the tool's flags however it was started.

    absl's --help lists the flags of the module named by sys.argv[0]: `python train.py`
    names train.py, but a console script (facevae-train) names its wrapper, which defines
    none, so absl printed only "Try --helpfull". The flags of `main`'s module are made key
    flags of sys.argv[0] too, and the module's docstring heads the help if the wrapper has
    none. Call it after the tool's flags are defined.
    """
    module = sys.modules[main.__module__]
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    script = sys.modules["__main__"]
    if not script.__doc__:
        script.__doc__ = module.__doc__
    app.run(main)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
