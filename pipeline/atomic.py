"""Output folders that appear whole or not at all: build beside the target, then swap it in.

TF-free, so tools.make_synthetic can use it without importing TensorFlow.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable


def sibling(path: str, suffix: str) -> str:
    """`/a/b` -> `/a/.b.<suffix>`: a hidden neighbour on the same filesystem (rename is atomic)."""
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f".{name}.{suffix}")


def fresh_temp_dir(path: str, say: Callable[[str], None] | None = None) -> str:
    """An empty `.<name>.incomplete` folder beside `path`.

    The name is fixed, so the leftover of a killed run is found and removed first.
    """
    tmp = sibling(path, "incomplete")
    if os.path.exists(tmp):
        if say:
            say(f"removing {tmp}, left by an interrupted run")
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def move_into_place(tmp: str, path: str) -> None:
    """Renames the finished folder `tmp` to `path`, replacing an existing one.

    The old folder is moved aside first, so `path` never holds a mix of the two.
    """
    if not os.path.exists(path):
        os.rename(tmp, path)
        return
    old = sibling(path, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old)
