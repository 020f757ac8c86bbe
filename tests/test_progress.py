"""pipeline/progress.py: the one progress output, on a terminal and in a log file."""

import io
import re

from facevae.pipeline.progress import Console, Progress, duration

ESCAPES = re.compile(r"\x1b|\r|\x08")


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_prints_count_rate_and_eta_lines_when_not_a_tty():
    stream = io.StringIO()
    bar = Progress(total=3, label="prep", stream=stream)
    for _ in range(3):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("prep [") and "1/3" in lines[0] and "img/s" in lines[0]
    assert "3/3" in lines[-1] and "ETA 0:00" in lines[-1]
    assert not ESCAPES.search(stream.getvalue())


def test_progress_redraws_in_place_on_a_terminal():
    stream = FakeStream(tty=True)
    bar = Progress(total=3, label="prep", stream=stream, every=0.0)
    for _ in range(3):
        bar.update()
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rprep [") and text.endswith("\n") and text.count("\n") == 1


def test_console_clears_a_bar_before_a_line_and_draws_no_bar_in_a_file():
    stream = FakeStream(tty=True)
    console = Console(stream, every=0.0)
    console.bar("working 1/2")
    console.line("a message")
    assert stream.getvalue() == "\rworking 1/2\r" + " " * 11 + "\ra message\n"
    plain = FakeStream(tty=False)
    console = Console(plain)
    console.bar("working 1/2")
    console.line("a message")
    console.end_bar()
    assert plain.getvalue() == "a message\n"


def test_duration():
    assert duration(5) == "0:05" and duration(3725) == "1:02:05" and duration(-1) == "0:00"
