"""What every command line shares: quiet TensorFlow start-up, --help, one-line errors.

This is the one module of the library that speaks the command lines' language. Library
code names a setting in backticks (`batch_size`), by the name it shares with its flag, and
says a fix in words; `one_line` turns such a message into what a command prints: the
setting becomes its flag (--batch_size), and where the fix is another command (prepare the
dataset again, train the judge) that command is added.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

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

    def one_line_usage(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except app.UsageError as e:  # absl would print the whole help above it
            sys.exit(usage_line(e, argv))

    app.run(one_line_usage, flags_parser=parse_flags)


def usage_line(error: app.UsageError, argv: Sequence[str]) -> str:
    """A command line's misuse as one short line, as the flag errors are."""
    name = os.path.basename(argv[0]) if argv else "command"
    return f"{name}: {_cut_long_words(str(error), MAX_ECHO)} (see --help)"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad value as one short line (absl prints two lines and
    echoes the value whole, however long)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        name = os.path.basename(argv[0]) if argv else "command"
        sys.exit(f"{name}: {_cut_long_words(str(e), MAX_ECHO)} (see --help)")


def _cut_long_words(text: str, longest: int | None = None) -> str:
    """One line, where a run of more than `longest` (default MAX_WORD: no path is that
    long; a hostile value can be) non-blank characters is cut to its first MAX_ECHO."""
    text = " ".join(text.split())
    longest = MAX_WORD if longest is None else longest
    return re.sub(rf"\S{{{longest + 1},}}", lambda m: m.group(0)[:MAX_ECHO] + "...", text)


# The commands that fix what a library error says, by the error's fields.
PREPARE_COMMAND = "python -m tools.prepare_celeba --src SRC --out {data_dir} --overwrite"
JUDGE_COMMAND = "python -m tools.train_judge --data_dir {data_dir}"
MAX_ECHO = 80  # characters of a bad value a message quotes
MAX_WORD = 256  # a longer run of non-blank characters in a message is a value, not a path


def one_line(error: BaseException, prefix: str = "") -> str:
    """A library error as a command line prints it: one line, `setting` as --setting.

    Backticked names that are flags of this process become flags; a DatasetError that is
    fixed by preparing the dataset again (its `reprepare`) gains the command that does it,
    an error that names a missing judge (its `judge_data_dir`) the command that trains one.
    Words longer than MAX_ECHO characters (a hostile value) are cut.
    """
    text = _cut_long_words(str(error))  # one line, whatever the message held

    def flag(match: re.Match) -> str:
        name = match.group(1)
        return f"--{name}" if name in flags.FLAGS else match.group(0)

    text = re.sub(r"`([a-z][a-z0-9_]*)`", flag, text)
    data_dir = getattr(error, "data_dir", None)
    if getattr(error, "reprepare", False) and data_dir:
        text += f" (`{PREPARE_COMMAND.format(data_dir=data_dir)}`)"
    judge_data_dir = getattr(error, "judge_data_dir", None)
    if judge_data_dir:
        text += f" (`{JUDGE_COMMAND.format(data_dir=judge_data_dir)}`)"
    return f"{prefix}{text}"


def fail(error: BaseException, prefix: str = "") -> None:
    """Exits with `one_line(error)` on stderr and status 1: the end of a CLI's main()."""
    sys.exit(one_line(error, prefix))


def short(value: object, limit: int = MAX_ECHO) -> str:
    """A value for a message, cut to `limit` characters: a bad value is not echoed whole."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
