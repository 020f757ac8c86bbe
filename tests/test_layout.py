"""The shape of the house, read from the code: which module may import which, what library
code may say and do, and how big a command line may grow.

- pipeline/ imports nothing of model/ or tools/; model/ nothing of tools/; nothing imports
  tools/ (train.py, sample.py, evaluate.py neither): tools are command lines only.
- Every import of the project's own code goes through the package name `facevae`: an
  installed copy has no top-level `model`, `pipeline` or `tools`.
- Library code never exits, never reads absl's FLAGS and never names a command line's
  flags or commands in a message (model/console.py is the one module that speaks their
  language); it names settings in backticks instead.
- Command lines stay thin; a module past MAX_MODULE_LINES says in its docstring why it is
  one module.
"""

from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipeline", "model", "tools")
CLIS = ("train.py", "sample.py", "evaluate.py")
CONSOLE = os.path.join("model", "console.py")  # the library's module for command lines
MAX_CLI_LINES = 230  # "about 200"
MAX_MODULE_LINES = 500


def python_files(*folders: str) -> list[str]:
    """Relative paths of the .py files of the given folders of the repository."""
    found = []
    for folder in folders:
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                found.append(os.path.join(folder, name))
    return found


def imported(path: str) -> set[str]:
    """Every module name an import statement of the file names (absolute imports)."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


LIBRARY = python_files("pipeline", "model")
EVERYTHING = [*LIBRARY, *python_files("tools"), *CLIS]


@pytest.mark.parametrize("path", EVERYTHING)
def test_imports_point_one_way(path):
    names = imported(path)
    top = path.split(os.sep)[0]
    forbidden = {"facevae.tools"}  # nothing imports the command-line tools
    if top == "pipeline":
        forbidden |= {"facevae.model"}
    assert not {n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)}
    # The project's own code only ever as facevae.*: no generic top-level names.
    bare = {n for n in names if n.split(".")[0] in (*PACKAGES, "train", "sample", "evaluate")}
    assert not bare, f"{path} imports {sorted(bare)}: import them as facevae.*"


def test_tests_import_the_package_not_generic_names():
    for path in python_files("tests"):
        bare = {n for n in imported(path) if n.split(".")[0] in PACKAGES}
        assert not bare, f"{path} imports {sorted(bare)}"
        assert not {n for n in imported(path) if n.startswith("facevae.tools")}, path


def string_literals(path: str) -> list[tuple[int, str]]:
    """(line, text) of every string in the file that is not a docstring."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_text and id(node) not in docstrings:
            found.append((node.lineno, node.value))
    return found


@pytest.mark.parametrize("path", [p for p in LIBRARY if p != CONSOLE])
def test_library_messages_name_settings_not_flags_or_commands(path):
    bad = [
        (line, text)
        for line, text in string_literals(path)
        if re.search(r"(?<![\w-])--[a-z][a-z0-9_]*", text)
        or re.search(r"\b(train|sample|evaluate)\.py\b|python -m tools\.", text)
    ]
    assert not bad, f"{path}: flags or commands in messages: {bad[:3]}"


@pytest.mark.parametrize("path", LIBRARY)
def test_library_code_never_exits_nor_reads_flags(path):
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    calls = [
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
    ]
    if path != CONSOLE:  # console.fail is the one exit a command line asks for
        assert "sys.exit" not in calls and "exit" not in calls, path
    flags_read = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and ast.unparse(n) == "flags.FLAGS"
    ]
    assert path == CONSOLE or not flags_read, path


@pytest.mark.parametrize("path", [*CLIS, *python_files("tools")])
def test_command_lines_are_thin(path):
    with open(os.path.join(ROOT, path)) as f:
        lines = f.read().count("\n")
    assert lines <= MAX_CLI_LINES, f"{path} has {lines} lines: move the work into the library"


@pytest.mark.parametrize("path", LIBRARY)
def test_a_long_module_says_why_it_is_one(path):
    with open(os.path.join(ROOT, path)) as f:
        source = f.read()
    if source.count("\n") <= MAX_MODULE_LINES:
        return
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert re.search(r"one module", docstring, re.I), (
        f"{path} has {source.count(chr(10))} lines: split it by role, or say in its docstring "
        "why it is one module"
    )
