"""README.md's flag tables against the command lines themselves.

A table whose header is `| flag | default | meaning |` documents the flags of the command named
in backticks in the heading above it (`tools.prepare_celeba`, `train.py`, ...). Every row must
name a real flag with its real default, and every flag of that command must have a row. The
real defaults come from absl's `--helpxml`, so the command's own flag definitions decide.
The Python snippets that load a trained run (`runs/demo`) run as written in a fresh process,
and the figures and results table are those `tools.make_figures` wrote into docs/.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# Documented defaults that stand for "no value" (absl's None): the flag must have none.
NO_VALUE_WORDS = {"required", "none", "all cores", "unset"}


@dataclasses.dataclass(frozen=True)
class Row:
    command: str  # as named in the heading: tools.prepare_celeba, train.py, ...
    flag: str  # without the dashes
    default: str  # the cell's text
    line: int  # in README.md


def flag_rows(text: str) -> list[Row]:
    """The rows of every flag table in a markdown text."""
    rows, heading, in_table = [], "", False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            heading, in_table = line, False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif [c.lower() for c in cells[:2]] == ["flag", "default"]:
            named = re.search(r"`([\w./-]+)`", heading)
            assert named, f"README.md:{number}: name the command in backticks in the heading"
            command, in_table = named.group(1), True
        elif in_table and not set(cells[0]) <= set("-: "):
            flag = cells[0].strip("`").lstrip("-")
            rows.append(Row(command, flag, cells[1], number))
    return rows


def same_default(documented: str, real: str | None) -> bool:
    """Whether a table cell states the flag's real default (as --helpxml prints it).

    The value is the cell's text before any " (" explanation, without backticks; numbers
    compare as numbers (4,096 == 4096), anything else as lower-case text.
    """
    value = documented.split(" (")[0].replace("`", "").strip().lower()
    if not real:
        return value in NO_VALUE_WORDS
    if value == real.lower():
        return True
    try:
        return float(value.replace(",", "")) == float(real)
    except ValueError:
        return False


# absl's --helpxml of many command lines in one process: each module's flags are dropped
# before the next is imported, since several define flags of the same name.
_HELPXML = """
import importlib, io, json, sys
from absl import flags
out = {}
for command in json.loads(sys.argv[1]):
    module = importlib.import_module(command)
    sys.argv[0] = command
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(command, flag)
    text = io.StringIO()
    flags.FLAGS.write_help_in_xml_format(text)
    out[command] = text.getvalue()
    for flag in flags.FLAGS.get_flags_for_module(module):
        delattr(flags.FLAGS, flag.name)
print(json.dumps(out))
"""


def module_of(command: str) -> str:
    """train.py -> facevae.train; tools.x stays."""
    return f"facevae.{command[:-3]}" if command.endswith(".py") else command


@functools.cache
def all_real_defaults(commands: tuple[str, ...]) -> dict[str, dict[str, str | None]]:
    """Each command's own flags (absl's key flags) and their defaults, from --helpxml."""
    modules = [module_of(c) for c in commands]
    done = subprocess.run(
        [sys.executable, "-c", _HELPXML, json.dumps(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    xml = json.loads(done.stdout.strip().splitlines()[-1])
    defaults = {}
    for command, module in zip(commands, modules, strict=True):
        tree = ET.fromstring(xml[module])
        defaults[command] = {
            flag.findtext("name"): flag.findtext("default") or None
            for flag in tree.iter("flag")
            if flag.findtext("key") == "yes"
        }
    return defaults


def real_defaults(command: str) -> dict[str, str | None]:
    commands = tuple(sorted({row.command for row in readme_rows()} | {command}))
    return all_real_defaults(commands)[command]


def readme_rows() -> list[Row]:
    with open(README) as f:
        return flag_rows(f.read())


def test_every_documented_default_is_the_real_one():
    rows = readme_rows()
    assert rows, "README.md has no flag table"
    wrong = []
    for row in rows:
        defaults = real_defaults(row.command)
        if row.flag not in defaults:
            wrong.append(f"line {row.line}: {row.command} has no --{row.flag}")
        elif not same_default(row.default, defaults[row.flag]):
            real = defaults[row.flag] or "none (no value)"
            wrong.append(
                f"line {row.line}: --{row.flag} documented as {row.default!r}, "
                f"{row.command}'s default is {real!r}"
            )
    assert not wrong, "README.md flag tables disagree with --help:\n" + "\n".join(wrong)


def test_every_flag_of_a_documented_command_has_a_row():
    rows = readme_rows()
    missing = []
    for command in sorted({row.command for row in rows}):
        documented = {row.flag for row in rows if row.command == command}
        missing += [f"{command} --{f}" for f in sorted(set(real_defaults(command)) - documented)]
    assert not missing, "flags missing from README.md's tables: " + ", ".join(missing)


TABLE = """
# Title
| flag | default | meaning |
|---|---|---|
| not a table of ours |

### `tools.thing` flags

| flag | default | meaning |
|---|---|---|
| `--size` | 96 | side |
| `--shards` | `4,096` (about 20 MB) | per shard |
| `--workers` | all cores | processes |

Text between.

| other | table |
|---|---|
| `--size` | 7 |
"""


def test_flag_rows_reads_only_flag_tables_under_a_named_command():
    with pytest.raises(AssertionError, match=r"README\.md:3: name the command"):
        flag_rows(TABLE)
    rows = flag_rows(TABLE.replace("# Title\n| flag | default | meaning |", "# Title\n"))
    assert [(r.command, r.flag, r.default) for r in rows] == [
        ("tools.thing", "size", "96"),
        ("tools.thing", "shards", "`4,096` (about 20 MB)"),
        ("tools.thing", "workers", "all cores"),
    ]


@pytest.mark.parametrize(
    "documented, real, same",
    [
        ("96", "96", True),
        ("`4,096` (about 20 MB)", "4096", True),
        ("4096", "0", False),  # the README's --examples_per_shard before the fix
        ("0", None, False),  # a number where the flag has no default
        ("all cores", None, True),
        ("required", None, True),
        ("`lanczos`", "lanczos", True),
        ("`0.8,0.1,0.1`", "0.8,0.1,0.1", True),
        ("false", "false", True),
        ("true", "false", False),
        ("none", "none", True),  # an enum whose value is the word none
    ],
)
def test_same_default(documented, real, same):
    assert same_default(documented, real) is same


def test_loading_snippets_run_in_a_fresh_process(tiny_data_dir, tmp_path):
    from facevae.model.trainer import TrainConfig, train_and_evaluate

    config = TrainConfig(
        data_dir=tiny_data_dir, z_dim=64, filters=(8, 16), batch_size=8, epochs=1, steps_per_epoch=1
    )
    workdir = str(tmp_path / "runs" / "demo")
    train_and_evaluate(config, workdir)
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    snippets = [b for b in blocks if '"runs/demo' in b]
    assert len(snippets) == 2  # model.keras with keras, export/ with TensorFlow alone
    for code in snippets:
        # In another folder, so the import works from the installed package, not the cwd.
        done = subprocess.run(
            [sys.executable, "-c", code.replace('"runs/demo', f'"{workdir}')],
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_readme_shows_the_figures_and_table_make_figures_wrote():
    with open(README) as f:
        text = f.read()
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        assert f.read().strip() in text  # pasted whole after the last make_figures
    pictures = re.findall(r"\]\((docs/[\w.]+\.png)\)", text)
    assert len(set(pictures)) == 7
    for picture in pictures:
        assert 0 < os.path.getsize(os.path.join(ROOT, picture)) <= 300_000, picture
